// Profiles computed from a model and contexts instead of named by file.
//
// A scenario may give, instead of `profile:`,
//   profile_from:
//     model: ../models/default                  # HF checkpoint folder (required)
//     contexts: ../data/retrieval/contexts-2048.jsonl   # (required)
//     codecs: [raw, quant8, cachegen]
//     chunk_tokens: 256
//     max_contexts: 4
//     (and max_context_tokens, greedy_tokens, params: [k=v or codec.k=v, ...], codec_model, dtype, kv_dtype)
// `kvstream run` then computes the profile once with `kvstream profile` and
// keeps it in a cache under a content hash of the model's files, the
// contexts, the codec model and every setting, so every run of the sweep and
// every later sweep with the same recipe reuses it, and a changed model or
// contexts file makes a new one.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace kvs::scenarios {

struct ProfileRecipe {
  std::vector<std::string> args;  // `kvstream profile` arguments, without -o
  std::string hash;               // 16 hex digits
  std::string cache_path;         // <profile_cache_dir()>/<hash>.json
};

// The recipe of a scenario's `profile_from:` (paths resolved against
// `base_dir`), or nullopt when it has none. Errors name the file, line and key.
std::optional<ProfileRecipe> read_profile_recipe(const std::string& yaml_text, const std::string& source,
                                                 const std::string& base_dir);

// $KVSTREAM_CACHE_DIR/profiles, else $XDG_CACHE_HOME/kvstream/profiles, else
// ~/.cache/kvstream/profiles.
std::string profile_cache_dir();

}  // namespace kvs::scenarios
