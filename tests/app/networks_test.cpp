// A1111's extra networks in the prompt: LoRA tags and embedding words put in and taken out as
// its cards do, and the files listed as the engine finds them.
#include "networks.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "sds/generation_request.h"
#include "sds/safetensors.h"

namespace fs = std::filesystem;
using namespace sds::app;

TEST(Networks, LoraTagsGoInAndOut) {
    EXPECT_EQ(toggle_lora("", "ink"), "<lora:ink:1>");
    EXPECT_EQ(toggle_lora("a cat", "ink"), "a cat <lora:ink:1>");
    EXPECT_EQ(toggle_lora("a cat ", "ink", 0.5), "a cat <lora:ink:0.5>");
    EXPECT_EQ(toggle_lora("a cat\n", "ink", -1.25), "a cat\n<lora:ink:-1.25>");
    // Out again, whatever its fields, with its separator; other tags stay.
    EXPECT_EQ(toggle_lora("a cat <lora:ink:1>", "ink"), "a cat");
    EXPECT_EQ(toggle_lora("<lora:ink:0.5:1> a cat", "ink"), "a cat");
    EXPECT_EQ(toggle_lora("a cat, <lora:ink:te=1:unet=0.5>, blue", "ink"), "a cat, blue");
    EXPECT_EQ(toggle_lora("<lora:ink> <lora:inkwell:1> <lora:ink:2>", "ink"), "<lora:inkwell:1>");
    EXPECT_EQ(toggle_lora("<lora:ink:1><lora:ink:1>", "ink"), "");
    // A name is a whole name: "ink" is not "inkwell" nor "Ink".
    EXPECT_TRUE(has_lora("a <lora:ink:1>", "ink"));
    EXPECT_FALSE(has_lora("a <lora:inkwell:1>", "ink"));
    EXPECT_FALSE(has_lora("a <lora:Ink:1>", "ink"));
    EXPECT_FALSE(has_lora("a lora:ink", "ink"));
    for (const std::string prompt : {"", "a cat", "a cat, blue", "(a cat:1.2)\nblue"}) {
        const std::string in = toggle_lora(prompt, "ink");
        EXPECT_TRUE(has_lora(in, "ink")) << in;
        EXPECT_EQ(toggle_lora(in, "ink"), prompt);
    }
}

TEST(Networks, EmbeddingWordsGoInAndOut) {
    EXPECT_EQ(toggle_word("blurry", "EasyNegative"), "blurry EasyNegative");
    EXPECT_EQ(toggle_word("blurry, easynegative", "EasyNegative"), "blurry");
    EXPECT_EQ(toggle_word("EASYNEGATIVE blurry", "EasyNegative"), "blurry");
    EXPECT_EQ(toggle_word("easynegative, blurry, easynegative", "EasyNegative"), "blurry");
    // Inside a longer word it is not the embedding's word: added.
    EXPECT_FALSE(has_word("easynegatives", "easynegative"));
    EXPECT_EQ(toggle_word("easynegatives", "easynegative"), "easynegatives easynegative");
    EXPECT_TRUE(has_word("(easynegative:1.2)", "easynegative"));
    for (const std::string prompt : {"", "a cat", "a cat, <lora:ink:1>"}) {
        const std::string in = toggle_word(prompt, "my-style");
        EXPECT_TRUE(has_word(in, "my-style")) << in;
        EXPECT_EQ(toggle_word(in, "my-style"), prompt);
    }
}

TEST(Networks, ListsTheFilesTheEngineFinds) {
    const fs::path dir = fs::temp_directory_path() / "sds_networks_test";
    fs::remove_all(dir);
    fs::create_directories(dir / "loras" / "styles");
    fs::create_directories(dir / "embeddings");
    const at::Tensor t = at::zeros({2, 2});
    // kohya-ss's tag counts: two datasets, counted together.
    sds::save_safetensors(
        dir / "loras" / "styles" / "ink.safetensors", {{"w", t}},
        {{"ss_tag_frequency",
          R"({"10_ink": {"ink": 10, " sketch": 3, "cat": 1}, "5_more": {"cat": 4, "dog": 2}})"}});
    sds::save_safetensors(dir / "loras" / "plain.safetensors", {{"w", t}});
    std::ofstream(dir / "loras" / "old.pt") << "not read for the list";
    std::ofstream(dir / "loras" / "notes.txt") << "not a LoRA";
    sds::save_safetensors(dir / "embeddings" / "EasyNegative.safetensors", {{"emb_params", t}});
    std::ofstream(dir / "embeddings" / "readme.md") << "not an embedding";

    const auto loras = list_loras((dir / "loras").string());
    ASSERT_EQ(loras.size(), 3u);
    EXPECT_EQ(loras[0].shown, "old");
    EXPECT_EQ(loras[1].shown, "plain");
    EXPECT_EQ(loras[2].shown, "styles/ink");
    EXPECT_EQ(loras[2].name, "ink");
    EXPECT_EQ(loras[2].trained_on, (std::vector<std::string>{"ink", "cat", "sketch", "dog"}));
    EXPECT_TRUE(loras[0].trained_on.empty());
    EXPECT_TRUE(loras[1].trained_on.empty());
    EXPECT_TRUE(list_loras((dir / "nothing").string()).empty());
    EXPECT_TRUE(list_loras("").empty());

    // The tag put in for a listed LoRA names that file to the engine.
    for (const NetworkFile& lora : loras) {
        sds::GenerationRequest r;
        r.prompt = toggle_lora("a cat", lora.name, 0.75);
        r.take_lora_tags((dir / "loras").string());
        ASSERT_EQ(r.loras.size(), 1u) << lora.name;
        EXPECT_EQ(fs::path(r.loras[0].file), fs::path(lora.path));
        EXPECT_EQ(r.loras[0].weight, 0.75);
        EXPECT_EQ(r.prompt, "a cat ");  // the tag out, its separator left, as A1111 does
    }
    const auto embeddings = list_embeddings((dir / "embeddings").string());
    ASSERT_EQ(embeddings.size(), 1u);
    EXPECT_EQ(embeddings[0].name, "EasyNegative");
    sds::GenerationRequest r;
    r.negative_prompt = toggle_word("blurry", embeddings[0].name);
    r.find_embeddings((dir / "embeddings").string());
    ASSERT_EQ(r.embeddings.size(), 1u);
    EXPECT_EQ(fs::path(r.embeddings[0].file), fs::path(embeddings[0].path));
    fs::remove_all(dir);
}
