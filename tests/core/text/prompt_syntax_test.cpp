// A1111's prompt syntax: the emphasis parse against the examples A1111 documents for its
// parse_prompt_attention, and the chunks its tokenize_line makes, with the SD 1.x tokenizer
// (and SD 2.x's, which pads with "!"). The encoded prompts are compared with transformers and
// diffusers in tests/app/cli_test.py.
#include "sds/prompt_syntax.h"

#include <gtest/gtest.h>

#include "sds/error.h"
#include "test_paths.h"

namespace {

using sds::WeightedText;

const sds::ClipTokenizer& tokenizer() {
    static const sds::ClipTokenizer tok = [] {
        const auto dir = sds::test::fixture_dir("tokenizer") / "tokenizer";
        return sds::ClipTokenizer::load(dir / "vocab.json", dir / "merges.txt");
    }();
    return tok;
}

std::vector<WeightedText> pieces(std::initializer_list<std::pair<const char*, double>> list) {
    std::vector<WeightedText> out;
    for (const auto& [text, weight] : list) {
        if (std::string(text) == "BREAK" && weight < 0) {
            out.push_back({"BREAK", 1.0, true});
        } else {
            out.push_back({text, weight, false});
        }
    }
    return out;
}

std::string show(const std::vector<WeightedText>& v) {
    std::string s;
    for (const auto& p : v) {
        s += "[" + p.text + ", " + (p.is_break ? "BREAK" : std::to_string(p.weight)) + "] ";
    }
    return s;
}

#define EXPECT_PARSE(text, ...)                                                                \
    do {                                                                                       \
        const auto got = sds::parse_emphasis(text);                                            \
        const auto want = pieces(__VA_ARGS__);                                                 \
        EXPECT_EQ(got, want) << text << "\n got:  " << show(got) << "\n want: " << show(want); \
    } while (0)

TEST(PromptSyntax, A1111sDocumentedExamples) {
    // The doctest of A1111's parse_prompt_attention, weights to the last bit.
    EXPECT_PARSE("normal text", {{"normal text", 1.0}});
    EXPECT_PARSE("an (important) word", {{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}});
    EXPECT_PARSE("(unbalanced", {{"unbalanced", 1.1}});
    EXPECT_PARSE("\\(literal\\]", {{"(literal]", 1.0}});
    EXPECT_PARSE("(unnecessary)(parens)", {{"unnecessaryparens", 1.1}});
    EXPECT_PARSE("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                 {{"a ", 1.0},
                  {"house", 1.5730000000000004},
                  {" ", 1.1},
                  {"on", 1.0},
                  {" a ", 1.1},
                  {"hill", 0.55},
                  {", sun, ", 1.1},
                  {"sky", 1.4641000000000006},
                  {".", 1.1}});
}

TEST(PromptSyntax, WeightsBracketsAndEscapes) {
    EXPECT_PARSE("[a]", {{"a", 1 / 1.1}});
    EXPECT_PARSE("[[a]] b", {{"a", (1 / 1.1) * (1 / 1.1)}, {" b", 1.0}});
    EXPECT_PARSE("(a: 1.5 ) b", {{"a", 1.5}, {" b", 1.0}});
    EXPECT_PARSE("(a:-0.5)", {{"a", -0.5}});
    EXPECT_PARSE("(a:+.5)", {{"a", 0.5}});
    EXPECT_PARSE("(a:2.)", {{"a", 2.0}});
    // A weight with no "(" open, a ")" or "]" with none open, a lone ":": text.
    EXPECT_PARSE("a:1.2) b) c] d:e", {{"a:1.2) b) c] d:e", 1.0}});
    // A weight closes the innermost "(" only; "[" left open weighs the rest.
    EXPECT_PARSE("[a (b:2) c", {{"a ", 1 / 1.1}, {"b", 2 / 1.1}, {" c", 1 / 1.1}});
    EXPECT_PARSE("a \\\\ b \\c", {{"a \\ b c", 1.0}});
    EXPECT_PARSE("", {{"", 1.0}});
    EXPECT_PARSE("()", {{"", 1.0}});
    EXPECT_THROW(sds::parse_emphasis("(a:1.2.3)"), sds::Error);
    EXPECT_THROW(sds::parse_emphasis("(a:.)"), sds::Error);
}

TEST(PromptSyntax, Break) {
    EXPECT_PARSE("a  BREAK\tb", {{"a", 1.0}, {"BREAK", -1}, {"b", 1.0}});
    EXPECT_PARSE("BREAK", {{"", 1.0}, {"BREAK", -1}, {"", 1.0}});
    // Only the word on its own, in capitals.
    EXPECT_PARSE("aBREAK BREAKs break", {{"aBREAK BREAKs break", 1.0}});
    EXPECT_PARSE("(a BREAK b)", {{"a", 1.1}, {"BREAK", -1}, {"b", 1.1}});
}

using sds::PromptPart;

// What Python's re gives for A1111's \bAND\b split and its weight pattern (worked out in
// Python, cases below).
TEST(PromptSyntax, AndSplitsComposablePromptsWithTheirWeights) {
    using V = std::vector<PromptPart>;
    EXPECT_EQ(sds::split_and("a cat AND a dog:0.5"), (V{{"a cat", 1.0}, {" a dog", 0.5}}));
    EXPECT_EQ(sds::split_and("a cat:1.2"), (V{{"a cat", 1.2}}));
    EXPECT_EQ(sds::split_and("a cat : 1.2  "), (V{{"a cat", 1.2}}));
    EXPECT_EQ(sds::split_and("a:+.5 AND b: -2 AND c:1e3"),
              (V{{"a", 0.5}, {" b", -2.0}, {" c:1e3", 1.0}}));
    EXPECT_EQ(sds::split_and("a\nAND\tb:0.3\n"), (V{{"a", 1.0}, {"\tb", 0.3}}));
    // Empty parts stay parts.
    EXPECT_EQ(sds::split_and("a AND"), (V{{"a", 1.0}, {"", 1.0}}));
    EXPECT_EQ(sds::split_and("AND"), (V{{"", 1.0}, {"", 1.0}}));
    EXPECT_EQ(sds::split_and("a AND AND b"), (V{{"a", 1.0}, {"", 1.0}, {" b", 1.0}}));
    // Only the word on its own, in capitals; Python's \b knows letters beyond ASCII.
    EXPECT_EQ(sds::split_and("ANDROID and a BRAND"), (V{{"ANDROID and a BRAND", 1.0}}));
    EXPECT_EQ(sds::split_and("x_AND y"), (V{{"x_AND y", 1.0}}));
    EXPECT_EQ(sds::split_and("東京AND 🦊AND b"), (V{{"東京AND 🦊", 1.0}, {" b", 1.0}}));
    // Weights: the last ':' and a number to the end, as Python's float reads it.
    EXPECT_EQ(sds::split_and("a:b:2"), (V{{"a:b", 2.0}}));
    EXPECT_EQ(sds::split_and("a:-1"), (V{{"a", -1.0}}));
    EXPECT_EQ(sds::split_and("a:.5"), (V{{"a", 0.5}}));
    EXPECT_EQ(sds::split_and("a:5."), (V{{"a", 5.0}}));
    for (const char* text : {"(a cat:1.2)", "a:2.5.1", "a:+.", "a:", "a: 1 2"}) {
        EXPECT_EQ(sds::split_and(text), (V{{text, 1.0}})) << text;
    }
    EXPECT_FALSE(sds::composes(sds::split_and("a cat ")));
    EXPECT_TRUE(sds::composes(sds::split_and("a cat:1.2")));
    EXPECT_TRUE(sds::composes(sds::split_and("a AND b")));
    // The emphasis parse reads AND as a word (the negative prompt's), and BREAK beside
    // letters beyond ASCII as Python's \b does.
    EXPECT_PARSE("a cat AND a dog", {{"a cat AND a dog", 1.0}});
    EXPECT_PARSE("東京BREAK 🦊BREAK b", {{"東京BREAK 🦊", 1.0}, {"BREAK", -1}, {"b", 1.0}});
}

using sds::TimedPrompt;

TEST(PromptSyntax, PromptEditingSwitchesTextAtItsStep) {
    using V = std::vector<TimedPrompt>;
    EXPECT_EQ(sds::prompt_schedule("a [cat:dog:0.5] b", 20), (V{{10, "a cat b"}, {20, "a dog b"}}));
    EXPECT_EQ(sds::prompt_schedule("[cat:dog:5]", 20), (V{{5, "cat"}, {20, "dog"}}));
    EXPECT_EQ(sds::prompt_schedule("[dog: 0.25 ]", 8), (V{{2, ""}, {8, "dog"}}));
    EXPECT_EQ(sds::prompt_schedule("[cat::3]", 8), (V{{3, "cat"}, {8, ""}}));
    // Fractions round down; a step past the end or before the first never switches.
    EXPECT_EQ(sds::prompt_schedule("[a:b:0.33]", 10), (V{{3, "a"}, {10, "b"}}));
    EXPECT_EQ(sds::prompt_schedule("[a:b:30]", 10), (V{{10, "a"}}));
    EXPECT_EQ(sds::prompt_schedule("[a:b:0]", 10), (V{{10, "b"}}));
    // Inside emphasis, nested, and two at once.
    EXPECT_EQ(sds::prompt_schedule("(([cat:dog:0.5]:1.2)) [[x:[y:z:0.2]:0.6]]", 10),
              (V{{2, "((cat:1.2)) [x]"},
                 {5, "((cat:1.2)) [x]"},
                 {6, "((dog:1.2)) [x]"},
                 {10, "((dog:1.2)) [z]"}}));
    // The text for each model call: the first entry that reaches it, the last past the end.
    const auto s = sds::prompt_schedule("[cat:dog:0.5]", 20);
    EXPECT_EQ(sds::prompt_at(s, 0), "cat");
    EXPECT_EQ(sds::prompt_at(s, 10), "cat");
    EXPECT_EQ(sds::prompt_at(s, 11), "dog");
    EXPECT_EQ(sds::prompt_at(s, 37), "dog");
}

TEST(PromptSyntax, AlternationTakesTurns) {
    using V = std::vector<TimedPrompt>;
    EXPECT_EQ(sds::prompt_schedule("a [cat|dog|] b", 4),
              (V{{1, "a cat b"}, {2, "a dog b"}, {3, "a  b"}, {4, "a cat b"}}));
    // As A1111 counts: calls 0 and 1 both read the first.
    const auto s = sds::prompt_schedule("[cat|dog]", 6);
    EXPECT_EQ(sds::prompt_at(s, 0), "cat");
    EXPECT_EQ(sds::prompt_at(s, 1), "cat");
    EXPECT_EQ(sds::prompt_at(s, 2), "dog");
    EXPECT_EQ(sds::prompt_at(s, 3), "cat");
}

TEST(PromptSyntax, WhatIsNotEditingStaysAsItIs) {
    using V = std::vector<TimedPrompt>;
    for (const char* text : {"a (red:1.2) [blue] \\[x:0.5\\]", "[a: b]", "[a:b:c:0.5]",
                             "[unclosed:0.5", "[a|b:0.5]", "(a:1.5)"}) {
        EXPECT_EQ(sds::prompt_schedule(text, 10), (V{{10, text}})) << text;
    }
    // A '|' outside an alternation: A1111's parser gives up, the prompt is read as it is.
    EXPECT_EQ(sds::prompt_schedule("a | b [cat:dog:0.5]", 10), (V{{10, "a | b [cat:dog:0.5]"}}));
    EXPECT_EQ(sds::prompt_schedule("(a|b) [c|d]", 2), (V{{2, "(a|b) [c|d]"}}));
}

TEST(PromptSyntax, TheHiresPassCountsOnFromTheFirst) {
    using V = std::vector<TimedPrompt>;
    // A fraction below 1 ended in the first pass; 1.5 is half way through the second.
    EXPECT_EQ(sds::prompt_schedule("[cat:dog:0.5]", 10, 20), (V{{10, "dog"}}));
    EXPECT_EQ(sds::prompt_schedule("[cat:dog:1.5]", 10, 20), (V{{5, "cat"}, {10, "dog"}}));
    EXPECT_EQ(sds::prompt_schedule("[cat:dog:25]", 10, 20), (V{{5, "cat"}, {10, "dog"}}));
}

std::vector<int64_t> padded(std::vector<int32_t> tokens) {
    std::vector<int64_t> ids = {tokenizer().start_id()};
    ids.insert(ids.end(), tokens.begin(), tokens.end());
    ids.resize(77, tokenizer().end_id());
    return ids;
}

TEST(PromptSyntax, AShortPromptIsTheDiffusersInput) {
    for (const char* text : {"a photo of a cat", "", "a: photo, of a cat"}) {
        const auto c = sds::chunk_prompt(tokenizer(), text);
        ASSERT_EQ(c.chunks.size(), 1u) << text;
        EXPECT_EQ(c.chunks[0].ids, tokenizer().encode_padded(text)) << text;
        EXPECT_EQ(c.chunks[0].weights, std::vector<float>(77, 1.0f)) << text;
        EXPECT_EQ(c.token_count, static_cast<int>(tokenizer().encode(text).size()));
    }
}

TEST(PromptSyntax, WeightsFollowTheirTokens) {
    const auto c = sds::chunk_prompt(tokenizer(), "a (red cat:1.25) [on] grass");
    ASSERT_EQ(c.chunks.size(), 1u);
    const auto& ch = c.chunks[0];
    EXPECT_EQ(ch.ids, tokenizer().encode_padded("a red cat on grass"));
    std::vector<float> want(77, 1.0f);
    want[2] = want[3] = 1.25f;
    want[4] = static_cast<float>(1 / 1.1);
    EXPECT_EQ(ch.weights, want);
}

std::string words(int n, const char* word = "cat") {
    std::string s;
    for (int i = 0; i < n; ++i) {
        s += std::string(i ? " " : "") + word;
    }
    return s;
}

TEST(PromptSyntax, LongPromptsComeInChunksOf75) {
    const int32_t cat = tokenizer().encode("cat").at(0);
    const int32_t dog = tokenizer().encode("dog").at(0);
    // 75 tokens: one chunk; 80: two, the second with the last 5.
    EXPECT_EQ(sds::chunk_prompt(tokenizer(), words(75)).chunks.size(), 1u);
    const auto c = sds::chunk_prompt(tokenizer(), words(78) + " " + words(2, "dog"));
    ASSERT_EQ(c.chunks.size(), 2u);
    EXPECT_EQ(c.token_count, 80);
    EXPECT_EQ(c.chunks[0].ids, padded(std::vector<int32_t>(75, cat)));
    EXPECT_EQ(c.chunks[1].ids, padded({cat, cat, cat, dog, dog}));
}

TEST(PromptSyntax, AChunkFullSoonAfterACommaEndsAtTheComma) {
    const int32_t cat = tokenizer().encode("cat").at(0);
    const int32_t dog = tokenizer().encode("dog").at(0);
    const int32_t comma = tokenizer().encode(",").at(0);
    // 60 cats, a comma, 20 dogs: the chunk fills 14 tokens after the comma, so the dogs move.
    auto c = sds::chunk_prompt(tokenizer(), words(60) + ", " + words(20, "dog"));
    ASSERT_EQ(c.chunks.size(), 2u);
    std::vector<int32_t> first(60, cat);
    first.push_back(comma);
    EXPECT_EQ(c.chunks[0].ids, padded(first));
    EXPECT_EQ(c.chunks[1].ids, padded(std::vector<int32_t>(20, dog)));
    EXPECT_EQ(c.token_count, 75 + 20);
    // 50 cats, a comma, 30 dogs: 24 after the comma is too far back: cut at 75.
    c = sds::chunk_prompt(tokenizer(), words(50) + ", " + words(30, "dog"));
    ASSERT_EQ(c.chunks.size(), 2u);
    first.assign(50, cat);
    first.push_back(comma);
    first.insert(first.end(), 24, dog);
    EXPECT_EQ(c.chunks[0].ids, padded(first));
    EXPECT_EQ(c.chunks[1].ids, padded(std::vector<int32_t>(6, dog)));
}

TEST(PromptSyntax, BreakStartsAChunk) {
    const int32_t cat = tokenizer().encode("cat").at(0);
    const int32_t dog = tokenizer().encode("dog").at(0);
    auto c = sds::chunk_prompt(tokenizer(), "(cat:1.5) BREAK dog");
    ASSERT_EQ(c.chunks.size(), 2u);
    EXPECT_EQ(c.chunks[0].ids, padded({cat}));
    EXPECT_EQ(c.chunks[0].weights[1], 1.5f);
    EXPECT_EQ(c.chunks[1].ids, padded({dog}));
    EXPECT_EQ(c.token_count, 76);
    // A BREAK at the end starts nothing more; two in a row leave an empty chunk between.
    EXPECT_EQ(sds::chunk_prompt(tokenizer(), "cat BREAK").chunks.size(), 1u);
    c = sds::chunk_prompt(tokenizer(), "cat BREAK BREAK dog");
    ASSERT_EQ(c.chunks.size(), 3u);
    EXPECT_EQ(c.chunks[1].ids, padded({}));
}

TEST(PromptSyntax, AnEmbeddingsVectorsStayInOneChunk) {
    sds::ClipTokenizer tok = tokenizer();
    const auto first = static_cast<int32_t>(tok.vocab_size());
    tok.set_added_words({{"inkstyle", {first, first + 1, first + 2}}});
    EXPECT_EQ(tok.added_word_length(first), 3u);
    EXPECT_EQ(tok.added_word_length(first + 1), 0u);
    const int32_t cat = tok.encode("cat").at(0);
    const auto c = sds::chunk_prompt(tok, words(74) + " (inkstyle:0.5)");
    ASSERT_EQ(c.chunks.size(), 2u);
    EXPECT_EQ(c.chunks[0].ids, padded(std::vector<int32_t>(74, cat)));
    EXPECT_EQ(c.chunks[1].ids, padded({first, first + 1, first + 2}));
    EXPECT_EQ(c.chunks[1].weights[3], 0.5f);
}

TEST(PromptSyntax, Sd2PadsAfterTheEndMarker) {
    const auto tok = sds::ClipTokenizer::load_folder(SDS_SOURCE_DIR "/models/sd2-config/tokenizer");
    ASSERT_NE(tok.pad_id(), tok.end_id());
    const auto c = sds::chunk_prompt(tok, "(a cat:1.2) BREAK on grass");
    ASSERT_EQ(c.chunks.size(), 2u);
    EXPECT_EQ(c.chunks[0].ids, tok.encode_padded("a cat"));
    EXPECT_EQ(c.chunks[1].ids, tok.encode_padded("on grass"));
}

TEST(PromptSyntax, Names) {
    for (auto s :
         {sds::PromptSyntax::Plain, sds::PromptSyntax::A1111, sds::PromptSyntax::A1111NoNorm}) {
        EXPECT_EQ(sds::prompt_syntax_from_name(sds::prompt_syntax_name(s)), s);
    }
    EXPECT_FALSE(sds::prompt_syntax_from_name("A1111").has_value());
}

}  // namespace
