#pragma once
// A config.json read with errors that name the file and the field.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sds {

class JsonConfig {
  public:
    static JsonConfig load(const std::filesystem::path& path);
    // A config held in memory; `name` stands for the file in messages.
    static JsonConfig from_json(nlohmann::json json, const std::string& name);

    const std::filesystem::path& path() const { return path_; }
    const nlohmann::json& json() const { return json_; }
    bool has(const std::string& key) const;

    // Each getter throws sds::ModelError "FILE: KEY ..." when the value has the wrong type; the
    // ones without a fallback also when the key is missing.
    int64_t integer(const std::string& key) const;
    int64_t integer(const std::string& key, int64_t fallback) const;
    double number(const std::string& key, double fallback) const;
    bool boolean(const std::string& key, bool fallback) const;
    std::string string(const std::string& key) const;
    std::string string(const std::string& key, const std::string& fallback) const;
    std::vector<int64_t> integers(const std::string& key) const;
    std::vector<std::string> strings(const std::string& key) const;

    [[noreturn]] void fail(const std::string& key, const std::string& what) const;

  private:
    const nlohmann::json& at(const std::string& key) const;
    std::filesystem::path path_;
    nlohmann::json json_;
};

}  // namespace sds
