#!/usr/bin/env python3
"""Writes PyTorch torch.save checkpoints (the zip format of torch >= 1.6, as
HF's pytorch_model.bin) with the Python standard library only, independently
of kvstream's C++ reader (llm/torch_checkpoint.cpp), from the public
description of the format (torch/serialization.py `_save`, torch/_utils.py
`_rebuild_tensor_v2`, Tensor.__reduce_ex__):

  a zip (stored, no compression) whose records all lie under `archive/`:
    archive/data.pkl    pickle protocol 2 of the state dict; each tensor is
                        REDUCE(torch._utils._rebuild_tensor_v2,
                               (storage, storage_offset, size, stride,
                                requires_grad, OrderedDict()))
                        and each storage a persistent id
                        ('storage', torch.FloatStorage, key, 'cpu', numel)
    archive/byteorder   b'little'
    archive/data/<key>  the storage's raw little-endian bytes, its data
                        aligned to 64 bytes in the file (torch pads the local
                        header's extra field, id 'FB')
    archive/version     b'3\\n'

Usage: make_torch_pickle.py [OUT_DIR]  (default: tests/llm/data/torch_pickle).
It converts the safetensors goldens ../golden (float32) and
../golden_mistral_bf16 (bfloat16, 2 shards) into pytorch_model.bin files
(with a shared-storage view and a non-contiguous tensor in each) and writes
small broken files for the error tests under bad/.
"""
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

ITEM = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
STORAGE_CLASS = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage", "I64": "LongStorage"}


# ----------------------------------------------------------------- safetensors

def read_safetensors(path):
    """name -> (dtype, shape, raw bytes), in file order."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], b[8 + n + lo:8 + n + hi])
    return out


def f32_to_f16(raw):
    count = len(raw) // 4
    return struct.pack("<%de" % count, *struct.unpack("<%df" % count, raw))


def transpose2(raw, rows, cols, item):
    """Row-major [rows, cols] bytes -> row-major [cols, rows] bytes."""
    out = bytearray(len(raw))
    for r in range(rows):
        for c in range(cols):
            src = (r * cols + c) * item
            dst = (c * rows + r) * item
            out[dst:dst + item] = raw[src:src + item]
    return bytes(out)


# ----------------------------------------------------------------- pickle

class Storage:
    def __init__(self, key, dtype, raw):
        self.key, self.dtype, self.raw = key, dtype, raw
        self.numel = len(raw) // ITEM[dtype]


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def contiguous_stride(size):
    stride, acc = [], 1
    for s in reversed(size):
        stride.append(acc)
        acc *= s
    return tuple(reversed(stride))


class Pickler:
    """Emits the protocol-2 opcodes Python's pickler writes for a torch.save
    state dict, memoizing (BINPUT/BINGET) globals and strings as it does."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = {}

    def _put(self, key):
        idx = len(self.memo)
        self.memo[key] = idx
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def _get(self, key):
        idx = self.memo[key]
        self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)

    def global_(self, module, name):
        key = ("global", module, name)
        if key in self.memo:
            return self._get(key)
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self._put(key)

    def string(self, s):
        key = ("str", s)
        if key in self.memo:
            return self._get(key)
        data = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(data)) + data
        self._put(key)

    def int_(self, v):
        if 0 <= v <= 0xFF:
            self.out += b"K" + bytes([v])
        elif 0 <= v <= 0xFFFF:
            self.out += b"M" + struct.pack("<H", v)
        elif -2**31 <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:  # LONG1: minimal two's complement, little-endian
            n = (v.bit_length() + 8) // 8
            self.out += b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)

    def int_tuple(self, t):
        if not t:
            self.out += b")"
            return
        if len(t) > 3:
            self.out += b"("
        for v in t:
            self.int_(v)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(t), b"t")
        self._put(("tuple", id(t), len(self.memo)))

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # EMPTY_TUPLE, REDUCE
        self._put(("od", len(self.memo)))

    def tensor(self, t):
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("  # MARK: the argument tuple
        self.out += b"("  # MARK: the persistent id
        self.string("storage")
        self.global_("torch", STORAGE_CLASS[t.storage.dtype])
        self.string(t.storage.key)
        self.string("cpu")
        self.int_(t.storage.numel)
        self.out += b"tQ"  # TUPLE, BINPERSID
        self.int_(t.offset)
        self.int_tuple(t.size)
        self.int_tuple(t.stride)
        self.out += b"\x89"  # NEWFALSE: requires_grad
        self.empty_ordered_dict()  # backward_hooks
        self.out += b"tR"  # TUPLE, REDUCE
        self._put(("tensor", id(t)))

    def state_dict(self, tensors, ordered, metadata):
        if ordered:
            self.empty_ordered_dict()
        else:
            self.out += b"}"
            self._put(("dict", 0))
        items = list(tensors.items())
        for at in range(0, len(items), 1000):  # pickle batches SETITEMS by 1000
            self.out += b"("
            for name, t in items[at:at + 1000]:
                self.string(name)
                self.tensor(t)
            self.out += b"u"
        if ordered and metadata:  # state_dict()._metadata, set by BUILD
            self.out += b"}"
            self._put(("state", 0))
            self.string("_metadata")
            self.empty_ordered_dict()
            self.out += b"("
            for prefix in metadata:
                self.string(prefix)
                self.out += b"}"
                self._put(("meta", prefix))
                self.string("version")
                self.int_(1)
                self.out += b"s"  # SETITEM
            self.out += b"u"
            self.out += b"s"  # SETITEM into the state dict
            self.out += b"b"  # BUILD
        self.out += b"."
        return bytes(self.out)


# ----------------------------------------------------------------- zip

def write_zip(path, records, align=64):
    """Records (name, bytes) in order, stored; data aligned to `align` bytes."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            header_at = f.tell()
            base = header_at + 30 + len(name.encode()) + 4  # + the 'FB' field's own 4 bytes
            pad = (-base) % align
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            z.writestr(info, data)


def write_zip64(path, records, align=64):
    """As write_zip, but in the zip64 layout torch's writer (miniz) uses for
    shards over 4 GiB: sizes and offsets 0xFFFFFFFF in the headers, the real
    values in zip64 extra fields, a zip64 end record and its locator."""
    out, central = bytearray(), bytearray()
    for name, data in records:
        nb = name.encode()
        off = len(out)
        local64 = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        pad = (-(off + 30 + len(nb) + len(local64) + 4)) % align
        extra = local64 + b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(nb), len(extra)) + nb + extra + data
        central64 = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(nb), len(central64), 0, 0, 0, 0, 0xFFFFFFFF) + nb + central64
    cd_at = len(out)
    out += central
    end64_at = len(out)
    n = len(records)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_at)
    out += struct.pack("<IIQI", 0x07064B50, 0, end64_at, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(out)


def save(path, tensors, ordered=True, metadata=(), byteorder=b"little", pickled=None, zip64=False):
    """torch.save(state_dict, path) for TensorRefs (name -> TensorRef)."""
    storages = {}
    for t in tensors.values():
        storages[t.storage.key] = t.storage
    data_pkl = pickled if pickled is not None else Pickler().state_dict(tensors, ordered, metadata)
    records = [("archive/data.pkl", data_pkl)]
    if byteorder is not None:
        records.append(("archive/byteorder", byteorder))
    for key in sorted(storages, key=lambda k: int(k)):
        records.append(("archive/data/" + key, storages[key].raw))
    records.append(("archive/version", b"3\n"))
    (write_zip64 if zip64 else write_zip)(path, records)


# ----------------------------------------------------------------- conversions

class Keys:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return str(self.n - 1)


def convert(weights, names, keys, to_f16=False, shared=None, transposed=None):
    """TensorRefs for `names` of safetensors `weights`: each in its own
    storage, except `shared` (a pair stored back to back in one storage) and
    `transposed` (stored as its transpose: a non-contiguous view)."""
    out = {}
    for name in names:
        if shared and name == shared[1]:
            continue
        dtype, shape, raw = weights[name]
        if to_f16:
            assert dtype == "F32"
            dtype, raw = "F16", f32_to_f16(raw)
        item = ITEM[dtype]
        if shared and name == shared[0]:
            d2, shape2, raw2 = weights[shared[1]]
            if to_f16:
                raw2 = f32_to_f16(raw2)
            s = Storage(keys.next(), dtype, raw + raw2)
            out[name] = TensorRef(s, 0, shape, contiguous_stride(shape))
            out[shared[1]] = TensorRef(s, len(raw) // item, shape2, contiguous_stride(shape2))
        elif name == transposed:
            rows, cols = shape
            s = Storage(keys.next(), dtype, transpose2(raw, rows, cols, item))
            out[name] = TensorRef(s, 0, shape, (1, rows))
        else:
            out[name] = TensorRef(Storage(keys.next(), dtype, raw), 0, shape, contiguous_stride(shape))
    return out


def copy_config(src_dir, dst_dir):
    os.makedirs(dst_dir, exist_ok=True)
    shutil.copy(os.path.join(src_dir, "config.json"), os.path.join(dst_dir, "config.json"))


def write_index(dst_dir, weight_map):
    with open(os.path.join(dst_dir, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "torch_pickle")
    golden = os.path.join(HERE, "golden")
    g = read_safetensors(os.path.join(golden, "model.safetensors"))
    layer_prefixes = ["", "model", "model.embed_tokens", "model.norm", "lm_head"] + [
        "model.layers.%d" % i for i in range(2)]

    # single_f32: OrderedDict with _metadata, as model.state_dict().
    d = os.path.join(out, "single_f32")
    copy_config(golden, d)
    t = convert(g, list(g), Keys(), shared=("model.layers.0.self_attn.k_proj.weight",
                                            "model.layers.0.self_attn.v_proj.weight"),
                transposed="lm_head.weight")
    save(os.path.join(d, "pytorch_model.bin"), t, ordered=True, metadata=layer_prefixes)

    # single_f32_zip64: the same file in the zip64 layout of shards > 4 GiB.
    d = os.path.join(out, "single_f32_zip64")
    copy_config(golden, d)
    save(os.path.join(d, "pytorch_model.bin"), t, ordered=True, metadata=layer_prefixes, zip64=True)

    # single_f16: the same weights rounded to float16 (struct's 'e': round to
    # nearest even, as torch's .to(torch.float16)); a plain dict.
    d = os.path.join(out, "single_f16")
    copy_config(golden, d)
    t = convert(g, list(g), Keys(), to_f16=True, shared=("model.layers.1.mlp.gate_proj.weight",
                                                          "model.layers.1.mlp.up_proj.weight"),
                transposed="model.embed_tokens.weight")
    save(os.path.join(d, "pytorch_model.bin"), t, ordered=False)

    # sharded_bf16: golden_mistral_bf16's two shards as HF's
    # pytorch_model-0000i-of-00002.bin + pytorch_model.bin.index.json.
    src = os.path.join(HERE, "golden_mistral_bf16")
    with open(os.path.join(src, "model.safetensors.index.json")) as f:
        st_map = json.load(f)["weight_map"]
    d = os.path.join(out, "sharded_bf16")
    copy_config(src, d)
    weight_map = {}
    shard_files = sorted(set(st_map.values()))
    for i, st_file in enumerate(shard_files):
        w = read_safetensors(os.path.join(src, st_file))
        names = [n for n in st_map if st_map[n] == st_file]
        pt_file = "pytorch_model-%05d-of-%05d.bin" % (i + 1, len(shard_files))
        if i == 0:
            t = convert(w, names, Keys(), shared=("model.layers.0.mlp.gate_proj.weight",
                                                  "model.layers.0.mlp.up_proj.weight"),
                        transposed="model.layers.0.self_attn.o_proj.weight")
        else:
            t = convert(w, names, Keys(), transposed="lm_head.weight")
        save(os.path.join(d, pt_file), t, ordered=False)
        for n in names:
            weight_map[n] = pt_file
    write_index(d, weight_map)

    # ---- broken files for the error tests
    bad = os.path.join(out, "bad")
    os.makedirs(bad, exist_ok=True)
    one = convert(g, ["model.norm.weight"], Keys())

    # A pickle calling os.system through GLOBAL + REDUCE (what a malicious
    # pytorch_model.bin does); must be refused, never run.
    evil = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    save(os.path.join(bad, "evil_global.bin"), one, pickled=evil)
    # An OrderedDict whose value is built by a forbidden global (builtins.eval).
    p = Pickler()
    p.empty_ordered_dict()
    p.out += b"("
    p.string("x")
    p.global_("builtins", "eval")
    p.string("1+1")
    p.out += b"\x85R"
    p.out += b"u."
    save(os.path.join(bad, "evil_eval_value.bin"), one, pickled=bytes(p.out))

    # The legacy (pre-1.6) format: pickled magic number, protocol version,
    # sys_info, then the object; not a zip.
    with open(os.path.join(bad, "legacy.bin"), "wb") as f:
        f.write(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))

    save(os.path.join(bad, "big_endian.bin"), one, byteorder=b"big")

    # A view reaching past its storage (16 elements, size 17).
    s = one["model.norm.weight"].storage
    save(os.path.join(bad, "out_of_bounds.bin"), {"model.norm.weight": TensorRef(s, 0, (17,), (1,))})
    save(os.path.join(bad, "out_of_bounds_offset.bin"), {"model.norm.weight": TensorRef(s, 8, (4, 3), (3, 1))})

    # A shard missing: index + shard 1 only.
    def sharded_golden(dirname, split):
        copy_config(golden, dirname)
        names = list(g)
        wm = {}
        for i, part in enumerate((names[:split], names[split:])):
            fname = "pytorch_model-%05d-of-00002.bin" % (i + 1)
            save(os.path.join(dirname, fname), convert(g, part, Keys()))
            for n in part:
                wm[n] = fname
        return names, wm

    d = os.path.join(bad, "missing_shard")
    names, wm = sharded_golden(d, 10)
    write_index(d, wm)
    os.remove(os.path.join(d, "pytorch_model-00002-of-00002.bin"))

    # A tensor listed for shard 1 that shard 1 does not hold.
    d = os.path.join(bad, "missing_in_shard")
    names, wm = sharded_golden(d, 10)
    wm["model.layers.0.self_attn.q_proj.bias"] = "pytorch_model-00001-of-00002.bin"
    write_index(d, wm)

    # A tensor in both shards.
    d = os.path.join(bad, "duplicate")
    names, wm = sharded_golden(d, 10)
    dup = convert(g, names[10:] + [names[0]], Keys())
    save(os.path.join(d, "pytorch_model-00002-of-00002.bin"), dup)
    write_index(d, wm)

    # model.norm.weight with 15 elements where the config needs 16.
    d = os.path.join(bad, "wrong_shape")
    copy_config(golden, d)
    t = convert(g, list(g), Keys())
    norm = t["model.norm.weight"]
    t["model.norm.weight"] = TensorRef(norm.storage, 0, (15,), (1,))
    save(os.path.join(d, "pytorch_model.bin"), t)

    # A dict holding itself (deep nesting is built by the C++ test).
    cycle = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."
    save(os.path.join(bad, "dict_cycle.bin"), {}, pickled=cycle)

    # model.norm.weight as int64 (a LongStorage): not a weight type.
    d = os.path.join(bad, "int_weight")
    copy_config(golden, d)
    t = convert(g, list(g), Keys())
    t["model.norm.weight"] = TensorRef(Storage("99", "I64", struct.pack("<16q", *range(16))), 0, (16,), (1,))
    save(os.path.join(d, "pytorch_model.bin"), t)

    # A state dict with a non-tensor value.
    p = Pickler()
    p.empty_ordered_dict()
    p.out += b"("
    p.string("step")
    p.int_(7)
    p.out += b"u."
    save(os.path.join(bad, "not_a_tensor.bin"), {}, pickled=bytes(p.out))


if __name__ == "__main__":
    main()
