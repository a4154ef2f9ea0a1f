#!/usr/bin/env python3
"""How much a model gains from copying: the induction check behind retrieval.

A model that has formed induction heads predicts a passage it has just seen
far better the second time. This builds, from held-out English and from random
syllable words, lines "A A" (the passage repeated) and "A B" (followed by an
unrelated passage of the same source), and the mirror sets "B B" and "B A", so
that both sides hold exactly the same passages, only in different orders. It
scores all four with `kvstream eval` and reports

    copy gain = (bits(AB) + bits(BA) - bits(AA) - bits(BB)) / bytes of the second halves

in bits per byte: about 0 for a model that cannot copy, approaching the
passages' own bits per byte for one that copies perfectly. Retrieval (the
model card's targets) needs this first, so watch it while training.

    python3 tools/model/copy_gain.py --model models/default [--kvstream build/apps/kvstream]
        [--heldout data/brown/heldout.txt] [--pairs 40] [--passage-bytes 400] [--json]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYLL = ["ka", "lo", "mi", "ran", "te", "vo", "sul", "bri", "ne", "dar", "po", "zel", "qui", "mar", "tos", "fen"]


def english_passages(path, n, size, rng):
    text = open(path, encoding="utf-8", errors="replace").read().replace("\n", " ")
    if len(text) < 2 * n * size:
        sys.exit(f"copy_gain: {path}: {len(text)} bytes, need at least {2 * n * size}")
    starts = rng.sample(range(0, len(text) - size, size), 2 * n)
    return [text[s:s + size] for s in starts]


def syllable_passages(n, size, rng):
    out = []
    for _ in range(2 * n):
        words = []
        while sum(len(w) + 1 for w in words) < size:
            words.append("".join(rng.choice(SYLL) for _ in range(rng.randint(1, 3))))
        out.append(" ".join(words)[:size])
    return out


def total_bits(kvstream, model, text, context_tokens):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        out = subprocess.run([kvstream, "eval", "--model", model, "--text", path, "--context-tokens",
                              str(context_tokens), "--json", "--threads", "1"],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE")).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"copy_gain: kvstream eval failed: {e.stderr.strip()}")
    finally:
        os.unlink(path)
    r = json.loads(out.strip().splitlines()[-1])
    return r["bits_per_token"] * r["tokens"]


def copy_gain(kvstream, model, passages, context_tokens):
    n = len(passages) // 2
    a, b = passages[:n], passages[n:]
    sets = {
        "AA": "\n".join(x + " " + x for x in a),
        "BB": "\n".join(y + " " + y for y in b),
        "AB": "\n".join(x + " " + y for x, y in zip(a, b)),
        "BA": "\n".join(y + " " + x for x, y in zip(a, b)),
    }
    bits = {k: total_bits(kvstream, model, v, context_tokens) for k, v in sets.items()}
    second_bytes = sum(len(x.encode()) for x in a) + sum(len(y.encode()) for y in b)
    total_bytes = sum(len(v.encode()) for v in sets.values())
    return {
        "copy_gain_bits_per_byte": (bits["AB"] + bits["BA"] - bits["AA"] - bits["BB"]) / second_bytes,
        "unrepeated_bits_per_byte": (bits["AB"] + bits["BA"]) / (total_bytes / 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--kvstream", default=os.path.join(ROOT, "build/apps/kvstream"))
    ap.add_argument("--heldout", default=os.path.join(ROOT, "data/brown/heldout.txt"))
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--passage-bytes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.pairs < 1 or args.passage_bytes < 8:
        sys.exit("copy_gain: --pairs >= 1 and --passage-bytes >= 8")
    # Every line (two passages) fits one evaluation window.
    context_tokens = max(64, 2 * args.passage_bytes + 64)
    rng = random.Random(args.seed)
    result = {"model": args.model, "pairs": args.pairs, "passage_bytes": args.passage_bytes}
    for name, passages in (("english", english_passages(args.heldout, args.pairs, args.passage_bytes, rng)),
                           ("syllables", syllable_passages(args.pairs, args.passage_bytes, rng))):
        result[name] = copy_gain(args.kvstream, args.model, passages, context_tokens)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("english", "syllables"):
        r = result[name]
        print(f"{name:10s} copy gain {r['copy_gain_bits_per_byte']:+.3f} bits/byte "
              f"(unrepeated text {r['unrepeated_bits_per_byte']:.3f} bits/byte)")


if __name__ == "__main__":
    main()
