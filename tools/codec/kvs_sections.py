#!/usr/bin/env python3
"""Where the bytes of encoded files (`kvstream encode`, .kvs) go, from the
section sizes of each chunk (docs/bitstream.md): K and V payload in bits per
K or V element; container (header, offset table, CRC) and, for cachegen's
code scheme, per-token scales and per-chunk tables in bits per element.
Knows cachegen (both schemes); other codecs count as one payload.

    /usr/bin/python3 tools/codec/kvs_sections.py FILE.kvs...
"""
import argparse
import struct


def chunks(path):
    with open(path, "rb") as f:
        d = f.read()
    if d[:4] != b"KVSF":
        raise SystemExit(f"{path}: not a kvstream encoded file")
    n = struct.unpack_from("<I", d, 8)[0]
    p = 12
    for _ in range(n):
        length = struct.unpack_from("<Q", d, p)[0]
        p += 8
        yield d[p:p + length]
        p += length


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    total = {}
    elements = 0

    def add(key, v):
        total[key] = total.get(key, 0) + v

    for path in args.files:
        for s in chunks(path):
            codec = struct.unpack_from("<H", s, 6)[0]
            layers, heads, dims, = struct.unpack_from("<III", s, 12)
            tokens, count, model_hash = struct.unpack_from("<IIQ", s, 32)
            sizes = struct.unpack_from(f"<{count}I", s, 48)
            elements += 2 * layers * heads * dims * tokens
            add("container", 48 + 4 * count + 4)
            if codec == 5 and model_hash:  # cachegen paper: one section per (layer, kind, head)
                for i, z in enumerate(sizes):
                    add("KV"[(i // heads) % 2], z)
            elif codec == 5:  # cachegen code: scales, tables, then (layer, kind, channel, block)
                add("scales", sizes[0])
                add("tables", sizes[1])
                per_kind = (count - 2) // (2 * layers)
                for i, z in enumerate(sizes[2:]):
                    add("KV"[(i // per_kind) % 2], z)
            else:
                add("payload", sum(sizes))
    parts = []
    for key, v in total.items():
        per = elements / 2 if key in ("K", "V") else elements
        parts.append(f"{key} {8 * v / per:.3f}")
    print(", ".join(parts), "(K, V: bits per K or V element; the rest: bits per element)")


if __name__ == "__main__":
    main()
