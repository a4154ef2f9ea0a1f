#!/usr/bin/env python3
"""Rewrites an HF checkpoint folder's model.safetensors with its F32 tensors as F16
(round to nearest even) and config.json's torch_dtype as float16.
    /usr/bin/python3 to_fp16.py IN_DIR OUT_DIR"""
import json, os, struct, sys
import numpy as np

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out_header, blobs, offset = {}, [], 0
for name in sorted(k for k in header if k != "__metadata__"):
    t = header[name]
    b, e = t["data_offsets"]
    a = np.frombuffer(data[b:e], dtype="<f4" if t["dtype"] == "F32" else None)
    if t["dtype"] == "F32":
        a = a.astype("<f2")
        dtype = "F16"
    else:
        raise SystemExit(f"{name}: dtype {t['dtype']} not handled")
    blob = a.tobytes()
    out_header[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
if "__metadata__" in header:
    out_header["__metadata__"] = header["__metadata__"]
h = json.dumps(out_header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
cfg = json.load(open(os.path.join(src, "config.json")))
cfg["torch_dtype"] = "float16"
with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
