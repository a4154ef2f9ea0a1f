#include "scenarios/profile_cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "base/files.h"
#include "codec/profile.h"
#include "scenarios/sweep.h"

namespace kvs::scenarios {

namespace fs = std::filesystem;

namespace {

// Every regular file under `path` (or the file itself), by name, hashed.
std::string tree_hash(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return content_hash(read_file(path));
  if (!fs::is_directory(path, ec)) throw Error(fmt::format("{}: no such file or folder", path));
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(path, ec))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string all;
  for (const auto& f : files) all += fs::relative(f, path).string() + "=" + content_hash(read_file(f)) + "\n";
  return content_hash(all);
}

}  // namespace

std::string profile_cache_dir() {
  if (const char* d = std::getenv("KVSTREAM_CACHE_DIR"); d && *d) return std::string(d) + "/profiles";
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/kvstream/profiles";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/kvstream/profiles";
}

std::optional<ProfileRecipe> read_profile_recipe(const std::string& yaml_text, const std::string& source,
                                                 const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(at_location(source, size_t(e.mark.line + 1), "YAML syntax: " + e.msg));
  }
  if (!root.IsMap() || !root["profile_from"]) return std::nullopt;
  const YAML::Node spec = root["profile_from"];
  auto line = [](const YAML::Node& n) { return n.Mark().line >= 0 ? size_t(n.Mark().line) + 1 : 0; };
  if (!spec.IsMap()) throw Error(at_location(source, line(spec), "profile_from: expected a mapping (model, contexts, ...)"));
  // key -> (flag, is a path)
  const std::map<std::string, std::pair<const char*, bool>> kKeys = {
      {"model", {"--model", true}},          {"contexts", {"--contexts", true}},
      {"codecs", {"--codecs", false}},       {"chunk_tokens", {"--chunk-tokens", false}},
      {"max_contexts", {"--max-contexts", false}}, {"max_context_tokens", {"--max-context-tokens", false}},
      {"greedy_tokens", {"--greedy-tokens", false}}, {"params", {"--param", false}},
      {"codec_model", {"--codec-model", true}},    {"dtype", {"--dtype", false}},
      {"kv_dtype", {"--kv-dtype", false}},          {"chunk_quality", {"--chunk-quality", false}},
  };
  std::vector<std::string> names;
  for (const auto& [k, v] : kKeys) names.push_back(k);
  ProfileRecipe r;
  std::vector<std::string> hashed;  // "key=value" lines, sorted: the order of keys does not matter
  for (const auto& kv : spec) {
    const std::string key = kv.first.Scalar();
    const auto it = kKeys.find(key);
    if (it == kKeys.end())
      throw Error(at_location(source, line(kv.first),
                              fmt::format("profile_from.{}: unknown key{} (known here: {})", key,
                                          did_you_mean(key, names), fmt::join(names, ", "))));
    const auto [flag, is_path] = it->second;
    std::vector<std::string> values;
    if (kv.second.IsSequence()) {
      for (const auto& v : kv.second) {
        if (!v.IsScalar()) throw Error(at_location(source, line(v), "profile_from." + key + ": expected scalars"));
        values.push_back(v.Scalar());
      }
      if (key == "codecs") values = {fmt::format("{}", fmt::join(values, ","))};
    } else if (kv.second.IsScalar()) {
      values.push_back(kv.second.Scalar());
    } else {
      throw Error(at_location(source, line(kv.second), "profile_from." + key + ": expected a value or a list"));
    }
    for (auto v : values) {
      if (is_path) {
        if (!fs::path(v).is_absolute() && !base_dir.empty()) v = (fs::path(base_dir) / v).lexically_normal().string();
        try {
          hashed.push_back(key + "=" + tree_hash(v));
        } catch (const Error& e) {
          throw Error(at_location(source, line(kv.second), "profile_from." + key + ": " + e.what()));
        }
      } else {
        hashed.push_back(key + "=" + v);
      }
      r.args.push_back(flag);
      r.args.push_back(v);
    }
  }
  for (const char* required : {"model", "contexts"})
    if (!spec[required]) throw Error(at_location(source, line(spec), fmt::format("profile_from.{}: missing (required)", required)));
  // A new profile format makes new profiles (the old cached ones no longer read).
  hashed.push_back(fmt::format("schema_version={}", codec::kProfileSchemaVersion));
  std::sort(hashed.begin(), hashed.end());
  r.hash = content_hash(fmt::format("{}", fmt::join(hashed, "\n")));
  r.cache_path = profile_cache_dir() + "/" + r.hash + ".json";
  return r;
}

}  // namespace kvs::scenarios
