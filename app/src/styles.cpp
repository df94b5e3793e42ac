#include "styles.h"

#include <QSaveFile>
#include <QString>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>

#include "sds/error.h"

namespace sds::app {

namespace {

std::string_view trim(std::string_view s) {
    const auto space = [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
    };
    while (!s.empty() && space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && space(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// Python's csv reader (excel dialect, skipinitialspace, not strict): the records, each a list
// of fields; `lines[k]`: the line record k starts on, for errors.
std::vector<std::vector<std::string>> read_csv(std::string_view text, std::vector<int>& lines) {
    std::vector<std::vector<std::string>> records;
    std::vector<std::string> record;
    std::string field;
    enum { StartRecord, StartField, InField, InQuoted, QuoteInQuoted } state = StartRecord;
    int line = 1, record_line = 1;
    const auto end_field = [&] {
        record.push_back(std::move(field));
        field.clear();
    };
    const auto end_record = [&] {
        end_field();
        records.push_back(std::move(record));
        lines.push_back(record_line);
        record.clear();
        state = StartRecord;
    };
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\n') {
            ++line;
        }
        switch (state) {
            case StartRecord:
                record_line = c == '\n' ? line - 1 : line;
                if (c == '\n' || c == '\r') {
                    continue;  // an empty line is no record
                }
                state = StartField;
                [[fallthrough]];
            case StartField:
                if (c == '"') {
                    state = InQuoted;
                } else if (c == ' ') {
                    // skipinitialspace: spaces before a field are not part of it
                } else if (c == ',') {
                    end_field();
                } else if (c == '\n' || c == '\r') {
                    end_record();
                } else {
                    field += c;
                    state = InField;
                }
                break;
            case InField:
                if (c == ',') {
                    end_field();
                    state = StartField;
                } else if (c == '\n' || c == '\r') {
                    end_record();
                } else {
                    field += c;
                }
                break;
            case InQuoted:
                if (c == '"') {
                    state = QuoteInQuoted;
                } else {
                    field += c;
                }
                break;
            case QuoteInQuoted:
                if (c == '"') {  // "" is a quote
                    field += c;
                    state = InQuoted;
                } else if (c == ',') {
                    end_field();
                    state = StartField;
                } else if (c == '\n' || c == '\r') {
                    end_record();
                } else {  // text after the closing quote belongs to the field
                    field += c;
                    state = InField;
                }
                break;
        }
    }
    if (state == InQuoted) {
        throw Error("a quote opened on line " + std::to_string(record_line) +
                    " is not closed by the end of the file");
    }
    if (state != StartRecord) {
        end_record();
    }
    return records;
}

// A field for the file: quoted (quotes doubled) where it has a comma, a quote or a line break,
// or starts with a space (which A1111's reader would drop).
std::string csv_field(std::string_view s) {
    if (s.find_first_of(",\"\r\n") == std::string_view::npos && !s.starts_with(' ')) {
        return std::string(s);
    }
    std::string out = "\"";
    for (const char c : s) {
        out += c;
        if (c == '"') {
            out += c;
        }
    }
    return out + "\"";
}

}  // namespace

std::string merge_style(std::string_view style_text, std::string_view prompt) {
    static constexpr std::string_view kSlot = "{prompt}";
    if (style_text.find(kSlot) != std::string_view::npos) {
        std::string out;
        size_t from = 0;
        for (size_t at = style_text.find(kSlot); at != std::string_view::npos;
             at = style_text.find(kSlot, from)) {
            out.append(style_text.substr(from, at - from)).append(prompt);
            from = at + kSlot.size();
        }
        return out.append(style_text.substr(from));
    }
    const std::string_view a = trim(prompt), b = trim(style_text);
    return a.empty()   ? std::string(b)
           : b.empty() ? std::string(a)
                       : std::string(a) + ", " + std::string(b);
}

std::vector<PromptStyle> load_styles(const std::filesystem::path& file) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
        return {};
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw Error(file.string() + ": cannot be read");
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.starts_with("\xEF\xBB\xBF")) {  // A1111 writes a byte order mark
        text.erase(0, 3);
    }
    std::vector<int> lines;
    std::vector<std::vector<std::string>> records;
    try {
        records = read_csv(text, lines);
    } catch (const Error& e) {
        throw Error(file.string() + ": " + e.what());
    }
    if (records.empty()) {
        return {};
    }
    std::map<std::string, size_t> column;
    for (size_t k = 0; k < records[0].size(); ++k) {
        column[records[0][k]] = k;  // a name twice: the last, as Python's DictReader
    }
    const auto find = [&](std::initializer_list<const char*> names) -> std::optional<size_t> {
        for (const char* name : names) {
            if (const auto it = column.find(name); it != column.end()) {
                return it->second;
            }
        }
        return std::nullopt;
    };
    const auto name = find({"name"});
    const auto prompt = find({"prompt", "text"});
    const auto negative = find({"negative_prompt"});
    if (!name || !prompt) {
        throw Error(file.string() +
                    ": not a styles file: its first line names no \"name\" and \"prompt\" "
                    "columns (A1111's styles.csv: name,prompt,negative_prompt)");
    }
    std::vector<PromptStyle> styles;
    for (size_t r = 1; r < records.size(); ++r) {
        const auto& row = records[r];
        if (std::all_of(row.begin(), row.end(), [](const std::string& f) { return f.empty(); })) {
            continue;  // a line of spaces
        }
        const auto at = [&](std::optional<size_t> k) {
            return k && *k < row.size() ? row[*k] : std::string();
        };
        PromptStyle style{at(name), at(prompt), at(negative)};
        if (style.name.starts_with('#')) {
            continue;  // A1111's dividers
        }
        if (style.name.empty()) {
            throw Error(file.string() + ": the style on line " + std::to_string(lines[r]) +
                        " has no name");
        }
        put_style(styles, std::move(style));  // a later row of a name replaces it, as in A1111
    }
    return styles;
}

void save_styles(const std::filesystem::path& file, const std::vector<PromptStyle>& styles) {
    std::string text = "\xEF\xBB\xBFname,prompt,negative_prompt\r\n";
    for (const PromptStyle& s : styles) {
        text += csv_field(s.name) + "," + csv_field(s.prompt) + "," + csv_field(s.negative_prompt) +
                "\r\n";
    }
    std::error_code ec;
    if (file.has_parent_path()) {
        std::filesystem::create_directories(file.parent_path(), ec);
    }
    QSaveFile out(QString::fromStdString(file.string()));
    if (!out.open(QIODevice::WriteOnly) ||
        out.write(text.data(), static_cast<qint64>(text.size())) !=
            static_cast<qint64>(text.size()) ||
        !out.commit()) {
        throw Error(file.string() + ": the styles cannot be written (" +
                    out.errorString().toStdString() + ")");
    }
}

const PromptStyle* find_style(const std::vector<PromptStyle>& styles, std::string_view name) {
    const auto it = std::find_if(styles.begin(), styles.end(),
                                 [&](const PromptStyle& s) { return s.name == name; });
    return it == styles.end() ? nullptr : &*it;
}

void put_style(std::vector<PromptStyle>& styles, PromptStyle style) {
    const auto same = std::find_if(styles.begin(), styles.end(),
                                   [&](const PromptStyle& s) { return s.name == style.name; });
    if (same != styles.end()) {
        *same = std::move(style);
    } else {
        styles.push_back(std::move(style));
    }
}

bool remove_style(std::vector<PromptStyle>& styles, std::string_view name) {
    return std::erase_if(styles, [&](const PromptStyle& s) { return s.name == name; }) > 0;
}

}  // namespace sds::app
