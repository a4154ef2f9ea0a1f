// libFuzzer target: the Hugging Face tokenizer.json reader (llm/tokenizer.h
// parse_hf_tokenizer) on arbitrary bytes, then encoding a fixed multilingual
// text (with special-token strings) through whatever parsed, and decoding the
// ids back. Contract: a result or a kvs::Error; anything else (crash,
// sanitizer report, other exception, hang) is a finding. Seeds:
// tests/fuzz/seeds/tokenizer_json (small cut-down Llama 3, Qwen2, GPT-2 and
// Llama-2-style tokenizers, made by tests/llm/data/tokenizers/make_small.py)
// and tests/llm/data/tokenizers (.ci/run).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"
#include "llm/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string text =
      "Hello world, don't I'LL 12345678\n\n\t  caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 "
      "<|begin_of_text|><s></s><|im_start|>x<|endoftext|>  ";
  try {
    const auto tok = kvs::llm::parse_hf_tokenizer(std::string_view(reinterpret_cast<const char*>(data), size),
                                                  "fuzz/tokenizer.json");
    for (bool add_bos : {true, false}) {
      const auto ids = tok->encode(text, add_bos);
      for (int64_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) __builtin_trap();  // an id the tokenizer cannot decode
      (void)tok->decode(ids);
    }
  } catch (const kvs::Error&) {
  }
  return 0;
}
