// The tokenizer against transformers' CLIPTokenizer: the prompt corpus and 3000 random strings,
// expected ids made by tests/reference/make_tokenizer_fixture.py.
#include "sds/clip_tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "test_paths.h"

namespace {

const std::filesystem::path kFixture = sds::test::fixture_dir("tokenizer");

const sds::ClipTokenizer& tokenizer() {
    static const sds::ClipTokenizer tok = sds::ClipTokenizer::load(
        kFixture / "tokenizer" / "vocab.json", kFixture / "tokenizer" / "merges.txt");
    return tok;
}

nlohmann::json expected() {
    std::ifstream in(kFixture / "expected.json");
    return nlohmann::json::parse(in);
}

TEST(ClipTokenizer, VocabularyIsTheSd1One) {
    EXPECT_EQ(tokenizer().vocab_size(), 49408u);
    EXPECT_EQ(tokenizer().start_id(), 49406);
    EXPECT_EQ(tokenizer().end_id(), 49407);
}

TEST(ClipTokenizer, KnownIds) {
    // "a photo of a cat" in every SD 1.x tokenizer.
    std::vector<int32_t> want = {320, 1125, 539, 320, 2368};
    EXPECT_EQ(tokenizer().encode("a photo of a cat"), want);
    EXPECT_EQ(tokenizer().encode("  A   PHOTO of a cat "), want);
}

TEST(ClipTokenizer, MatchesReferenceOnCorpusAndRandomStrings) {
    const auto rows = expected();
    ASSERT_GE(rows.size(), 3200u);
    int failures = 0;
    for (const auto& row : rows) {
        const std::string text = row["text"];
        const auto ids = tokenizer().encode(text);
        const auto padded = tokenizer().encode_padded(text);
        const auto want_ids = row["ids"].get<std::vector<int32_t>>();
        const auto want_padded = row["padded"].get<std::vector<int64_t>>();
        if (ids != want_ids || padded != want_padded) {
            if (++failures <= 10) {
                ADD_FAILURE() << "text " << nlohmann::json(text).dump()
                              << "\n ours: " << nlohmann::json(ids).dump()
                              << "\n want: " << nlohmann::json(want_ids).dump();
            }
        }
    }
    EXPECT_EQ(failures, 0) << "of " << rows.size() << " strings";
}

TEST(ClipTokenizer, PaddingAndTruncation) {
    const auto& tok = tokenizer();
    auto p = tok.encode_padded("a cat");
    ASSERT_EQ(p.size(), 77u);
    EXPECT_EQ(p[0], 49406);
    EXPECT_EQ(p[1], 320);
    EXPECT_EQ(p[3], 49407);
    EXPECT_EQ(p[76], 49407);
    EXPECT_EQ(tok.encode_padded("a cat", 5),
              (std::vector<int64_t>{49406, 320, 2368, 49407, 49407}));
    std::string longer;
    for (int i = 0; i < 100; ++i) {
        longer += "cat ";
    }
    auto t = tok.encode_padded(longer);
    ASSERT_EQ(t.size(), 77u);
    EXPECT_EQ(t[75], 2368);  // the 75th "cat"
    EXPECT_EQ(t[76], 49407);
}

TEST(ClipTokenizer, FolderPaddingSettingsAreTheOnesDiffusersUses) {
    // Padding token and model_max_length from tokenizer_config.json / special_tokens_map.json:
    // SD 2.x pads with "!" (id 0), a short model_max_length truncates, an older hub folder's
    // map wins over its config unless the config lists its added tokens.
    std::ifstream in(kFixture / "settings" / "expected.json");
    const auto want = nlohmann::json::parse(in);
    const auto prompts = want["prompts"].get<std::vector<std::string>>();
    ASSERT_EQ(want["padded"].size(), 4u);
    for (const auto& [name, rows] : want["padded"].items()) {
        const auto tok = sds::ClipTokenizer::load_folder(kFixture / "settings" / name);
        for (size_t i = 0; i < prompts.size(); ++i) {
            EXPECT_EQ(tok.encode_padded(prompts[i]), rows[i].get<std::vector<int64_t>>())
                << name << ": " << prompts[i];
        }
    }
    EXPECT_EQ(sds::ClipTokenizer::load_folder(kFixture / "settings" / "sd2_pad").pad_id(), 0);
    EXPECT_EQ(sds::ClipTokenizer::load_folder(kFixture / "settings" / "short").max_length(), 20);
}

TEST(ClipTokenizer, UnknownPaddingTokenNamesTheFile) {
    const auto dir = std::filesystem::temp_directory_path() / "sds_tok_bad_pad";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    for (const char* f : {"vocab.json", "merges.txt"}) {
        std::filesystem::copy_file(kFixture / "tokenizer" / f, dir / f);
    }
    std::ofstream(dir / "tokenizer_config.json") << R"({"pad_token": "<pad>"})";
    try {
        sds::ClipTokenizer::load_folder(dir);
        FAIL() << "expected an error";
    } catch (const sds::FileError& e) {
        EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("<pad>"), std::string::npos);
    }
    std::filesystem::remove_all(dir);
}

TEST(ClipTokenizer, CountsLikeA1111) {
    EXPECT_EQ(tokenizer().count_text(""), "0/75");
    EXPECT_EQ(tokenizer().count_text("a photo of a cat"), "5/75");
    std::string s;
    for (int i = 0; i < 80; ++i) {
        s += "cat ";
    }
    EXPECT_EQ(tokenizer().count_text(s), "80/150");
}

TEST(ClipTokenizer, InvalidUtf8DoesNotCrash) {
    const std::string bad = "a \xff\xfe cat \xc3";
    const auto ids = tokenizer().encode(bad);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 320);
}

TEST(ClipTokenizer, BadFilesNameTheFile) {
    const auto dir = sds::test::temp_dir("tok_bad");
    { std::ofstream(dir / "vocab.json") << "{\"a\": 1,"; }
    try {
        sds::ClipTokenizer::load(dir / "vocab.json", kFixture / "tokenizer" / "merges.txt");
        FAIL() << "no error";
    } catch (const sds::FileError& e) {
        EXPECT_NE(std::string(e.what()).find("vocab.json: not valid JSON"), std::string::npos)
            << e.what();
    }
    try {
        sds::ClipTokenizer::load(dir / "missing.json", kFixture / "tokenizer" / "merges.txt");
        FAIL() << "no error";
    } catch (const sds::FileError& e) {
        EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos) << e.what();
    }
    { std::ofstream(dir / "merges.txt") << "#version: 0.2\nq u\nnot_a_pair\n"; }
    try {
        sds::ClipTokenizer::load(kFixture / "tokenizer" / "vocab.json", dir / "merges.txt");
        FAIL() << "no error";
    } catch (const sds::FileError& e) {
        EXPECT_NE(std::string(e.what()).find("merges.txt: line 3"), std::string::npos) << e.what();
    }
}

}  // namespace
