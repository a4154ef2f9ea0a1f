#!/usr/bin/env python3
"""Profiling contexts that fit in the bundled model's training length.

models/default was trained on 1,024-token sequences; data/retrieval's
2,048-byte contexts put the scored continuation at positions 2,048-2,560,
beyond what it has seen. This cuts each context of a JSON-lines contexts file
into pieces of CONTEXT bytes followed by a continuation of CONTINUATION bytes
taken from the text right after it (so the continuation really follows), with
no question. Byte-level tokens: BOS + context + continuation = 1 + 512 + 511
= 1,024 positions by default.

    /usr/bin/python3 tools/codec/short_contexts.py data/retrieval/contexts-2048.jsonl \
        --context 512 --continuation 511 --pieces 2 > contexts-512.jsonl
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("contexts")
    ap.add_argument("--context", type=int, default=512, help="context bytes")
    ap.add_argument("--continuation", type=int, default=511, help="continuation bytes")
    ap.add_argument("--pieces", type=int, default=2, help="pieces per source context (consecutive, from its start)")
    args = ap.parse_args()
    span = args.context + args.continuation
    with open(args.contexts) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            text = (d["context"] + d["continuation"]).encode("utf-8")
            for k in range(args.pieces):
                piece = text[k * span:(k + 1) * span]
                if len(piece) < span:
                    break
                out = {"id": f"{d['id']}-s{k}", "context": piece[:args.context].decode("utf-8", "replace"),
                       "continuation": piece[args.context:].decode("utf-8", "replace")}
                sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
