// The safetensors reader against the reference writer's file, our writer against the reference
// reader (check_written_safetensors.py), and every rejection the reference reader makes.
#include "sds/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include "sds/error.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;

at::Tensor arange_as(at::ScalarType t, int64_t mod = 0) {
    at::Tensor v = at::arange(30, at::kLong);
    if (mod) {
        v = v.remainder(mod);
    }
    return v.reshape({2, 3, 5}).to(t);
}

TEST(SafeTensors, ReadsTheReferenceWritersFile) {
    const auto f =
        sds::SafeTensorsFile::open(sds::test::fixture_dir("safetensors") / "reference.safetensors");
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.tensors().size(), 12u);
    const std::pair<const char*, at::Tensor> want[] = {
        {"t_F32", arange_as(at::kFloat)},     {"t_F16", arange_as(at::kHalf)},
        {"t_BF16", arange_as(at::kBFloat16)}, {"t_F64", arange_as(at::kDouble)},
        {"t_I64", arange_as(at::kLong)},      {"t_I32", arange_as(at::kInt)},
        {"t_I16", arange_as(at::kShort)},     {"t_I8", arange_as(at::kChar, 100)},
        {"t_U8", arange_as(at::kByte, 100)},  {"t_BOOL", arange_as(at::kBool, 2)},
    };
    for (const auto& [name, t] : want) {
        const at::Tensor got = f.tensor(name);
        EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
        EXPECT_TRUE(at::equal(got, t)) << name;
    }
    EXPECT_EQ(f.tensor("empty").sizes(), (std::vector<int64_t>{0, 3}));
    EXPECT_EQ(f.tensor("scalar").dim(), 0);
    EXPECT_EQ(f.tensor("scalar").item<float>(), 7.0f);
}

TEST(SafeTensors, AlignedTensorsAreUsedInPlaceAndOutliveTheFile) {
    at::Tensor a, b;
    {
        const auto f = sds::SafeTensorsFile::open(sds::test::fixture_dir("safetensors") /
                                                  "reference.safetensors");
        a = f.tensor("t_F32");
        b = f.tensor("t_F32");
    }
    EXPECT_EQ(a.data_ptr(), b.data_ptr());             // both views of the same mapped bytes
    EXPECT_TRUE(at::equal(a, arange_as(at::kFloat)));  // the mapping outlived the file object
}

// Writes raw bytes: u64 N, the header text, then `data`.
fs::path write_raw(const std::string& name, const std::string& header, const std::string& data,
                   int64_t n_override = -1) {
    const auto path = sds::test::temp_dir("st_" + name) / (name + ".safetensors");
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = n_override >= 0 ? uint64_t(n_override) : header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << data;
    return path;
}

TEST(SafeTensors, MisalignedDataIsCopiedAndCorrect) {
    // A 9-byte... header text padded to an odd length puts the F32 data off 4-byte alignment.
    std::string header = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
    header += std::string((header.size() % 2 == 0) ? 1 : 0, ' ');
    const float vals[3] = {1.5f, -2.0f, 3.25f};
    const auto path =
        write_raw("misaligned", header, std::string(reinterpret_cast<const char*>(vals), 12));
    const auto f = sds::SafeTensorsFile::open(path);
    const at::Tensor t = f.tensor("x");
    EXPECT_EQ(t[0].item<float>(), 1.5f);
    EXPECT_EQ(t[1].item<float>(), -2.0f);
    EXPECT_EQ(t[2].item<float>(), 3.25f);
}

TEST(SafeTensors, WritingToATensorNeverChangesTheFile) {
    const auto dir = sds::test::temp_dir("st_cow");
    sds::save_safetensors(dir / "w.safetensors", {{"w", at::arange(8, at::kFloat)}});
    {
        auto f = sds::SafeTensorsFile::open(dir / "w.safetensors");
        f.tensor("w").fill_(42.0f);
    }
    const auto f = sds::SafeTensorsFile::open(dir / "w.safetensors");
    EXPECT_TRUE(at::equal(f.tensor("w"), at::arange(8, at::kFloat)));
}

TEST(SafeTensors, WriterOutputIsReadableByTheReference) {
    // check_written_safetensors.py reads this file with the reference reader afterwards.
    const char* root = std::getenv("SDS_TEST_TMP");
    const fs::path path = fs::path(root ? root : "test_tmp") / "written_by_us.safetensors";
    fs::create_directories(path.parent_path());
    std::vector<std::pair<std::string, at::Tensor>> ts = {
        {"a_f32", at::arange(20, at::kFloat).reshape({4, 5}) * 0.5},
        {"b_f16", at::arange(6, at::kHalf) - 3},
        {"c_bf16", at::arange(3, at::kBFloat16) * 1.5},
        {"d_i64", at::tensor({int64_t(-1), int64_t(0), int64_t(1) << 40})},
        {"e_u8", at::tensor({0, 255}).to(at::kByte)},
        {"f_bool", at::tensor({1, 0, 1}).to(at::kBool)},
        {"g_empty", at::zeros({0, 2})},
    };
    // A non-contiguous view is written as its values.
    ts[0].second = ts[0].second.t().contiguous().t();
    sds::save_safetensors(path, ts, {{"writer", "sdstudio"}, {"purpose", "test"}});
    const auto f = sds::SafeTensorsFile::open(path);
    EXPECT_EQ(f.metadata().at("writer"), "sdstudio");
    for (const auto& [name, t] : ts) {
        EXPECT_TRUE(at::equal(f.tensor(name), t)) << name;
    }
}

std::string open_error(const fs::path& path) {
    try {
        sds::SafeTensorsFile::open(path);
    } catch (const sds::FileError& e) {
        return e.what();
    }
    return "(no error)";
}

#define EXPECT_ERROR(path, text)                                                   \
    do {                                                                           \
        const std::string msg = open_error(path);                                  \
        EXPECT_NE(msg.find(text), std::string::npos) << msg;                       \
        EXPECT_NE(msg.find((path).filename().string()), std::string::npos) << msg; \
    } while (0)

const std::string kT4 = R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";

TEST(SafeTensorsErrors, EveryRejectionOfTheReferenceReader) {
    const std::string four(4, '\0');
    {
        const auto dir = sds::test::temp_dir("st_short");
        std::ofstream(dir / "short.safetensors") << "abc";
        EXPECT_ERROR(dir / "short.safetensors", "shorter than the 8-byte header length");
    }
    EXPECT_ERROR(write_raw("huge", "{}", "", 100'000'001), "is over the limit");
    EXPECT_ERROR(write_raw("past_end", "{" + kT4 + "}", four, 1000), "runs past the end");
    EXPECT_ERROR(write_raw("utf8", "{\"t\xff\":{}}", ""), "not valid JSON");
    EXPECT_ERROR(write_raw("json", "{,}", ""), "not valid JSON");
    EXPECT_ERROR(write_raw("not_object", "[1, 2]", ""), "unexpected an array");
    EXPECT_ERROR(write_raw("dup", "{" + kT4 + "," + kT4 + "}", four), "appears twice");
    EXPECT_ERROR(
        write_raw("dup_field",
                  R"({"t":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", four),
        "has the field 'dtype' twice");
    EXPECT_ERROR(write_raw("gap", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           std::string(8, '\0')),
                 "gaps and overlaps are not allowed");
    EXPECT_ERROR(write_raw("overlap",
                           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           std::string(12, '\0')),
                 "gaps and overlaps are not allowed");
    EXPECT_ERROR(
        write_raw("overflow",
                  R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                  four),
        "overflows");
    EXPECT_ERROR(
        write_raw("size", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four),
        "needs 8 bytes but its data_offsets span 4");
    EXPECT_ERROR(write_raw("tail", "{" + kT4 + "}", four + "xx"),
                 "the tensors' data is 4 bytes but the file has 6 bytes after the header");
    EXPECT_ERROR(
        write_raw("dtype", R"({"t":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "x"),
        "unsupported dtype 'Q4'");
    EXPECT_ERROR(write_raw("lacks", R"({"t":{"dtype":"F32","shape":[1]}})", ""),
                 "lacks one of dtype, shape and data_offsets");
    EXPECT_ERROR(
        write_raw("negative", R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
        "unexpected a negative number");
    EXPECT_ERROR(write_raw("meta", R"({"__metadata__":{"a":1}})", ""), "unexpected a number");
    EXPECT_ERROR(
        write_raw("offsets3", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}})", four),
        "data_offsets must have 2 entries");
    const auto missing = sds::test::temp_dir("st_missing") / "nope.safetensors";
    EXPECT_ERROR(missing, "cannot open");
}

TEST(SafeTensorsErrors, DeepNestingInUnknownFieldsIsBounded) {
    std::string deep = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)";
    deep += std::string(100, '[') + std::string(100, ']') + "}}";
    EXPECT_ERROR(write_raw("deep", deep, std::string(4, '\0')), "nests too deeply");
    std::string ok =
        R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":{"y":[1,{"z":null}]}}})";
    EXPECT_EQ(open_error(write_raw("unknown_ok", ok, std::string(4, '\0'))), "(no error)");
}

}  // namespace
