#!/usr/bin/env python3
"""Makes the small test tokenizers and their golden ids (see README.md).

Each NAME.json is a real tokenizer.json cut down to a valid smaller BPE: the
base symbols (the 256 byte-level characters, or for the SentencePiece-style
one its first 259 pieces and all one-character pieces), the first MERGES
merges whose parts are kept (with the tokens they make), and the added
tokens, renumbered 0..n-1 in the original order. Normalizer, pre-tokenizer,
decoder and post-processor are kept as they are (llama3 gets the Llama 3.1
Sequence[ByteLevel, TemplateProcessing] post-processor). NAME.golden.json
holds the ids of texts.json from the independent JS reference
(scripts/tokenizer-reference), with and without the post-processor's tokens.

Usage: make_small.py NODE_MODULES   (with @lenml/tokenizer-{llama3,qwen2_5,gpt2,llama2}
installed there, see scripts/tokenizer-reference)
It also writes tests/fuzz/seeds/tokenizer_json/NAME.json: the same with only
FUZZ_MERGES merges, small enough for the fuzzer's 64 KiB inputs.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "../../../.."))
MERGES = 2500
FUZZ_MERGES = 60


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def shrink(src, byte_level, pair_form, keep_added, max_merges=MERGES):
    d = json.load(open(src, encoding="utf-8"))
    vocab = d["model"]["vocab"]
    if byte_level:
        base = set(byte_chars())
    else:
        base = {t for t, i in vocab.items() if i < 259 or len(t) == 1}
    kept, merges = set(base), []
    for m in d["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in kept and b in kept and a + b in vocab:
            merges.append([a, b])
            kept.add(a + b)
            if len(merges) == max_merges:
                break
    old_ids = sorted(vocab[t] for t in kept)
    added = [a for a in d["added_tokens"] if keep_added(a)]
    remap = {}
    for i in old_ids + [a["id"] for a in added]:
        remap.setdefault(i, len(remap))
    inv = {i: t for t, i in vocab.items()}
    d["model"]["vocab"] = {inv[i]: remap[i] for i in old_ids}
    d["model"]["merges"] = merges if pair_form else [a + " " + b for a, b in merges]
    for a in added:
        a["id"] = remap[a["id"]]
    d["added_tokens"] = added
    return d, remap


def fix_template(pp, remap):
    if pp and pp.get("type") == "TemplateProcessing":
        for st in pp["special_tokens"].values():
            st["ids"] = [remap[i] for i in st["ids"]]
    if pp and pp.get("type") == "Sequence":
        for p in pp["processors"]:
            fix_template(p, remap)


def add_template(name, d, remap):
    if name == "llama3":  # as in Llama 3.1/3.2's tokenizer.json
        bos = 128000
        d["post_processor"] = {"type": "Sequence", "processors": [
            d["post_processor"],
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]}


def main():
    nm = sys.argv[1]
    path = lambda name: os.path.join(nm, "@lenml", "tokenizer-" + name, "models", "tokenizer.json")
    specs = [
        # name, source, byte-level, merges as [a, b], which added tokens
        ("llama3", "llama3", True, False, lambda a: a["id"] < 128010),
        ("qwen2", "qwen2_5", True, True, lambda a: True),
        ("gpt2", "gpt2", True, False, lambda a: True),
        ("llama2", "llama2", False, False, lambda a: True),
    ]
    texts = os.path.join(HERE, "texts.json")
    seeds = os.path.join(REPO, "tests", "fuzz", "seeds", "tokenizer_json")
    os.makedirs(seeds, exist_ok=True)
    for name, src, byte_level, pair_form, keep_added in specs:
        for max_merges in (FUZZ_MERGES, MERGES):
            d, remap = shrink(path(src), byte_level, pair_form, keep_added, max_merges)
            add_template(name, d, remap)
            fix_template(d["post_processor"], remap)
            out = os.path.join(HERE if max_merges == MERGES else seeds, name + ".json")
            with open(out, "w", encoding="utf-8") as f:
                json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
        env = dict(os.environ, NODE_PATH=nm)
        ref = lambda *extra: json.loads(subprocess.check_output(
            [os.path.join(REPO, "scripts", "tokenizer-reference"), out, texts, *extra], env=env))
        golden = {"tokenizer": name + ".json", "texts": ref()["texts"], "ids": ref()["ids"],
                  "ids_no_special": ref("--no-special")["ids"]}
        with open(os.path.join(HERE, name + ".golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        print(name, len(d["model"]["vocab"]), "tokens,", len(d["model"]["merges"]), "merges,",
              os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
