// Prompt styles: A1111's merge, and its styles.csv read as Python's csv module reads it (the
// file written by Python's csv module is checked through the CLI in cli_test.py).
#include "styles.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "sds/error.h"

namespace fs = std::filesystem;
using sds::app::PromptStyle;

namespace {

fs::path write(const std::string& name, const std::string& text) {
    const fs::path dir = fs::temp_directory_path() / "sds_styles_test";
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
}

}  // namespace

TEST(Styles, MergeAsA1111) {
    using sds::app::merge_style;
    EXPECT_EQ(merge_style("oil painting, {prompt}, framed", "a cat"),
              "oil painting, a cat, framed");
    EXPECT_EQ(merge_style("{prompt} and {prompt}", " a cat "), " a cat  and  a cat ");
    EXPECT_EQ(merge_style(" oil painting ", " a cat  "), "a cat, oil painting");
    EXPECT_EQ(merge_style("oil painting", ""), "oil painting");
    EXPECT_EQ(merge_style("", "a cat"), "a cat");
    EXPECT_EQ(merge_style("{prompt}", ""), "");
}

TEST(Styles, ReadsA1111sFile) {
    const fs::path file =
        write("styles.csv",
              "\xEF\xBB\xBFname,prompt,negative_prompt\r\n"
              "Oil,\"oil painting, {prompt}\",\"blurry, \"\"bad\"\" hands\"\r\n"
              "\r\n"
              "# Dividers,,\r\n"
              "Two lines, \"first\nsecond\"\r\n"  // skipinitialspace; no negative: empty
              "   \r\n"                           // spaces only: no style
              "Oil,\"oil, {prompt}\",\r\n"        // the same name again replaces it
              "Tail,a\"b\",c");                   // a quote inside a field; no line end at the end
    const auto styles = sds::app::load_styles(file);
    const std::vector<PromptStyle> want = {
        {"Oil", "oil, {prompt}", ""}, {"Two lines", "first\nsecond", ""}, {"Tail", "a\"b\"", "c"}};
    EXPECT_EQ(styles, want);
    ASSERT_NE(sds::app::find_style(styles, "Tail"), nullptr);
    EXPECT_EQ(sds::app::find_style(styles, "tail"), nullptr);
    // A1111's older files name the prompt column "text"; columns in any order.
    EXPECT_EQ(sds::app::load_styles(write("old.csv", "text,name\nx,Old\n")),
              (std::vector<PromptStyle>{{"Old", "x", ""}}));
    // No file: no styles.
    EXPECT_TRUE(sds::app::load_styles(file.parent_path() / "none.csv").empty());
}

TEST(Styles, WritesWhatItReads) {
    const std::vector<PromptStyle> styles = {{"Oil, \"best\"", "oil painting, {prompt}", ""},
                                             {"Lines", "a\r\nb", " c "},
                                             {"Plain", "x", "y"}};
    const fs::path file = write("round.csv", "");
    sds::app::save_styles(file, styles);
    EXPECT_EQ(sds::app::load_styles(file), styles);
    std::ifstream in(file, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text,
              "\xEF\xBB\xBFname,prompt,negative_prompt\r\n"
              "\"Oil, \"\"best\"\"\",\"oil painting, {prompt}\",\r\n"
              "Lines,\"a\r\nb\",\" c \"\r\n"
              "Plain,x,y\r\n");
}

TEST(Styles, PutReplacesInPlaceAndRemoveSaysWhetherItFoundOne) {
    std::vector<PromptStyle> styles = {{"A", "a", ""}, {"B", "b", ""}};
    sds::app::put_style(styles, {"A", "a2", "n"});
    sds::app::put_style(styles, {"C", "c", ""});
    EXPECT_EQ(styles, (std::vector<PromptStyle>{{"A", "a2", "n"}, {"B", "b", ""}, {"C", "c", ""}}));
    EXPECT_TRUE(sds::app::remove_style(styles, "B"));
    EXPECT_FALSE(sds::app::remove_style(styles, "B"));
    EXPECT_EQ(styles.size(), 2u);
}

TEST(Styles, BadFilesSayWhatIsWrong) {
    const auto message = [](const fs::path& file) {
        try {
            sds::app::load_styles(file);
        } catch (const sds::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const fs::path open = write("open.csv", "name,prompt\nA,\"never closed\n");
    EXPECT_EQ(message(open),
              open.string() + ": a quote opened on line 2 is not closed by the end of the file");
    const fs::path header = write("header.csv", "title,body\nA,b\n");
    EXPECT_NE(message(header).find(header.string() + ": not a styles file"), std::string::npos);
    const fs::path nameless = write("nameless.csv", "name,prompt\nA,a\n,b\n");
    EXPECT_EQ(message(nameless), nameless.string() + ": the style on line 3 has no name");
    EXPECT_THROW(sds::app::save_styles(open / "x.csv", {}), sds::Error);  // a file as folder
}
