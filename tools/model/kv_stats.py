#!/usr/bin/env python3
"""Per-layer statistics of a KV cache stored as safetensors (`kvstream kv dump`):
value ranges of K and V, and the variance of token-to-token differences
relative to the variance of the values (< 1: neighbouring tokens are similar,
so delta coding can help; about 2: no locality).

    /usr/bin/python3 tools/model/kv_stats.py kv.safetensors [--markdown]
"""
import argparse
import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, DTYPES[info["dtype"]]).astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    return out


# Every tensor written as F32 (header padded to 8 bytes), as `kvstream` reads them.
def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for k in sorted(tensors):
        data = np.ascontiguousarray(tensors[k], dtype=np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kv")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    t = read_safetensors(args.kv)
    layers = sorted({int(k.split(".")[1]) for k in t})
    rows = []
    for i in layers:
        row = [i]
        for kind in ("key", "value"):
            x = t[f"layers.{i}.{kind}"]  # [kv_heads, tokens, head_dim]
            d = np.diff(x, axis=1)
            ratio = float(d.var(axis=1).mean() / x.var(axis=1).mean())
            row += [float(x.min()), float(x.max()), float(np.abs(x).mean()), ratio]
        rows.append(row)
    if args.markdown:
        print("| layer | K min | K max | K mean abs | K var(delta)/var | V min | V max | V mean abs | V var(delta)/var |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print("| " + " | ".join([str(r[0])] + [f"{v:.3g}" for v in r[1:]]) + " |")
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
