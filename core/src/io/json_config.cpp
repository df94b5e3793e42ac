#include "io/json_config.h"

#include <fstream>
#include <iterator>
#include <string>

#include "sds/error.h"

namespace sds {

namespace {
// Python's json module writes NaN, Infinity and -Infinity, which JSON does not have (diffusers'
// DPMSolverMultistepScheduler saves lambda_min_clipped: -Infinity). Outside strings, those
// become null and the largest finite doubles.
std::string finite_json(std::string text) {
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        if (in_string) {
            out += ch;
            if (ch == '\\' && i + 1 < text.size()) {
                out += text[++i];
            } else if (ch == '"') {
                in_string = false;
            }
            continue;
        }
        if (ch == '"') {
            in_string = true;
        } else if (text.compare(i, 9, "-Infinity") == 0) {
            out += "-1.7976931348623157e308";
            i += 8;
            continue;
        } else if (text.compare(i, 8, "Infinity") == 0) {
            out += "1.7976931348623157e308";
            i += 7;
            continue;
        } else if (text.compare(i, 3, "NaN") == 0) {
            out += "null";
            i += 2;
            continue;
        }
        out += ch;
    }
    return out;
}
}  // namespace

JsonConfig JsonConfig::load(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw ModelError(path.string() + ": missing or unreadable");
    }
    JsonConfig c;
    c.path_ = path;
    try {
        const std::string text((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
        c.json_ = nlohmann::json::parse(finite_json(text));
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(path.string() + ": not valid JSON: " + e.what());
    }
    if (!c.json_.is_object()) {
        throw ModelError(path.string() + ": expected a JSON object");
    }
    return c;
}

JsonConfig JsonConfig::from_json(nlohmann::json json, const std::string& name) {
    JsonConfig c;
    c.path_ = name;
    c.json_ = std::move(json);
    return c;
}

void JsonConfig::fail(const std::string& key, const std::string& what) const {
    throw ModelError(path_.string() + ": " + key + " " + what);
}

bool JsonConfig::has(const std::string& key) const {
    return json_.contains(key) && !json_.at(key).is_null();
}

const nlohmann::json& JsonConfig::at(const std::string& key) const {
    if (!has(key)) {
        fail(key, "is missing");
    }
    return json_.at(key);
}

int64_t JsonConfig::integer(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_number_integer()) {
        fail(key, "must be an integer (found " + v.dump() + ")");
    }
    return v.get<int64_t>();
}

int64_t JsonConfig::integer(const std::string& key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
}

double JsonConfig::number(const std::string& key, double fallback) const {
    if (!has(key)) {
        return fallback;
    }
    const auto& v = json_.at(key);
    if (!v.is_number()) {
        fail(key, "must be a number (found " + v.dump() + ")");
    }
    return v.get<double>();
}

bool JsonConfig::boolean(const std::string& key, bool fallback) const {
    if (!has(key)) {
        return fallback;
    }
    const auto& v = json_.at(key);
    if (!v.is_boolean()) {
        fail(key, "must be true or false (found " + v.dump() + ")");
    }
    return v.get<bool>();
}

std::string JsonConfig::string(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_string()) {
        fail(key, "must be a string (found " + v.dump() + ")");
    }
    return v.get<std::string>();
}

std::string JsonConfig::string(const std::string& key, const std::string& fallback) const {
    return has(key) ? string(key) : fallback;
}

std::vector<int64_t> JsonConfig::integers(const std::string& key) const {
    const auto& v = at(key);
    std::vector<int64_t> out;
    if (v.is_number_integer()) {
        out.push_back(v.get<int64_t>());
        return out;
    }
    if (!v.is_array()) {
        fail(key, "must be a list of integers (found " + v.dump() + ")");
    }
    for (const auto& e : v) {
        if (!e.is_number_integer()) {
            fail(key, "must be a list of integers (found " + v.dump() + ")");
        }
        out.push_back(e.get<int64_t>());
    }
    return out;
}

std::vector<std::string> JsonConfig::strings(const std::string& key) const {
    const auto& v = at(key);
    std::vector<std::string> out;
    if (!v.is_array()) {
        fail(key, "must be a list of strings (found " + v.dump() + ")");
    }
    for (const auto& e : v) {
        if (!e.is_string()) {
            fail(key, "must be a list of strings (found " + v.dump() + ")");
        }
        out.push_back(e.get<std::string>());
    }
    return out;
}

}  // namespace sds
