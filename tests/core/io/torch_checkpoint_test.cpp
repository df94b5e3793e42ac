// PyTorch checkpoints (torch.save's zip archives) read through SafeTensorsFile: every file of
// tests/reference/make_torch_checkpoint_fixture.py gives exactly the tensors torch saved, or the
// error a user can act on; and nothing in the pickle is run.
#include "sds/torch_checkpoint.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <set>

#include <ATen/ops/equal.h>
#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "sds/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("torch_checkpoint");

nlohmann::json cases() {
    nlohmann::json j;
    std::ifstream(kDir / "cases.json") >> j;
    return j;
}

void expect_same_tensors(const fs::path& file) {
    const auto got = sds::SafeTensorsFile::open(file);
    const auto want = sds::SafeTensorsFile::open(file.string() + ".expected.safetensors");
    std::set<std::string> got_names, want_names;
    for (const auto& t : got.tensors()) {
        got_names.insert(t.name);
    }
    for (const auto& t : want.tensors()) {
        want_names.insert(t.name);
    }
    EXPECT_EQ(got_names, want_names) << file;
    for (const auto& name : want_names) {
        if (!got.contains(name)) {
            continue;
        }
        const at::Tensor a = got.tensor(name), b = want.tensor(name);
        EXPECT_EQ(a.scalar_type(), b.scalar_type()) << file << " " << name;
        ASSERT_EQ(a.sizes(), b.sizes()) << file << " " << name;
        EXPECT_TRUE(a.is_contiguous()) << file << " " << name;
        // Byte for byte (float8 has no comparison of its own).
        EXPECT_TRUE(at::equal(a.reshape({-1}).view(at::kByte), b.reshape({-1}).view(at::kByte)))
            << file << " " << name;
    }
}

TEST(TorchCheckpoint, EveryFileGivesTorchsTensorsOrSaysWhatIsWrong) {
    const auto all = cases();
    ASSERT_GE(all.size(), 17u);
    for (const auto& c : all) {
        const fs::path file = kDir / c["file"].get<std::string>();
        if (c["tensors"].get<bool>()) {
            expect_same_tensors(file);
            continue;
        }
        const std::string want = c["error"].get<std::string>();
        try {
            sds::SafeTensorsFile::open(file);
            ADD_FAILURE() << file << ": read, but should fail with '" << want << "'";
        } catch (const sds::FileError& e) {
            const std::string msg = e.what();
            EXPECT_EQ(msg.rfind(file.string() + ": ", 0), 0u) << msg;  // names the file
            EXPECT_NE(msg.find(want), std::string::npos) << msg;
        }
    }
}

TEST(TorchCheckpoint, RunsNothingTheFileNames) {
    std::string marker;
    std::getline(std::ifstream(kDir / "payload_marker.txt"), marker);
    ASSERT_FALSE(marker.empty());
    fs::remove(marker);
    const auto f = sds::SafeTensorsFile::open(kDir / "payload.ckpt");  // carries os.system
    EXPECT_TRUE(f.contains("model.diffusion_model.conv.weight"));
    EXPECT_FALSE(fs::exists(marker)) << "the pickle's os.system call ran";
}

TEST(TorchCheckpoint, StoredViewsAreReadInPlaceAndStridedOnesGathered) {
    const auto f = sds::SafeTensorsFile::open(kDir / "flat.pt");
    // q, k, v are thirds of one storage, torch.save's archive aligns storages to 64 bytes.
    const auto& q = f.info("q");
    const auto& k = f.info("k");
    EXPECT_EQ(k.begin, q.end);
    EXPECT_TRUE(q.strides.empty());
    EXPECT_EQ(f.info("transposed").strides, (std::vector<int64_t>{1, 5}));
    EXPECT_EQ(f.info("expanded").strides, (std::vector<int64_t>{0, 1}));
    // A tensor read in place shares the mapping: two reads see the same memory.
    EXPECT_EQ(f.tensor("q").data_ptr(), f.tensor("q").data_ptr());
    EXPECT_NE(f.tensor("transposed").data_ptr(), f.tensor("transposed").data_ptr());
}

TEST(TorchCheckpoint, TellsTheFormatsApartByTheirFirstBytes) {
    const auto bytes = [](const fs::path& p) {
        std::ifstream in(p, std::ios::binary);
        return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
    };
    const auto zip = bytes(kDir / "flat.pt");
    const auto legacy = bytes(kDir / "legacy.ckpt");
    const auto st = bytes(kDir / "flat.pt.expected.safetensors");
    EXPECT_TRUE(sds::looks_like_zip(zip.data(), zip.size()));
    EXPECT_FALSE(sds::is_legacy_torch_file(zip.data(), zip.size()));
    EXPECT_TRUE(sds::is_legacy_torch_file(legacy.data(), legacy.size()));
    EXPECT_FALSE(sds::looks_like_zip(legacy.data(), legacy.size()));
    EXPECT_FALSE(sds::looks_like_zip(st.data(), st.size()));
    EXPECT_FALSE(sds::is_legacy_torch_file(st.data(), st.size()));
    EXPECT_FALSE(sds::looks_like_zip(zip.data(), 3));
}

}  // namespace
