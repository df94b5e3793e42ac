#pragma once
// Where the tests find the reference fixtures (made by ctest's fixture steps) and scratch space.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace sds::test {

// SDS_FIXTURES is set by ctest to build/fixtures.
inline std::filesystem::path fixture_dir(const std::string& name) {
    const char* root = std::getenv("SDS_FIXTURES");
    return std::filesystem::path(root ? root : "fixtures") / name;
}

// A fresh, empty folder under the build's test scratch space.
inline std::filesystem::path temp_dir(const std::string& name) {
    const char* root = std::getenv("SDS_TEST_TMP");
    auto dir = std::filesystem::path(root ? root : "test_tmp") / name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

}  // namespace sds::test
