#!/usr/bin/python3
"""An independent decoder of the `kvs` chunk bitstream, written from
docs/bitstream.md (the chunk container, the rANS streams and the "kvs"
payload) and the documented constant kRatioQ32 (codec/kvs_format.cpp). It
exists to check that the document is complete: it does not port the C++
decoder (codec/kvs_decode.cpp, kvs_core.h, kvs_rows.cpp). The centroid
offsets follow the closed form next to kRatioQ32 in codec/kvs_format.cpp; a
computation from the document's words alone (bisection for sigma, numerical
integral of the bins) gives the same offsets.

    decode(stream: bytes) -> (header: dict, values: float32 array [layers][2][kv_heads][tokens][head_dim])

The value order is the C++ KVChunk's (layer, kind K=0/V=1, head, token, dim),
so values.tobytes() is what tests/codec/golden/*.crc hash (CRC-32, float32 LE).

Command line:
    kvs_reference.py --golden DIR          decode DIR/kvs*.kvsc, compare with each .crc
    kvs_reference.py --compare A.kvs B.safetensors
                                           decode every chunk of the multi-chunk
                                           file A, compare bit for bit with the
                                           C++ decoder's output B (`kvstream decode`)
    kvs_reference.py --self-test DIR       corrupt variants of DIR/kvs-L0.kvsc must raise
    kvs_reference.py --synthetic OUT LAYERS HEADS TOKENS DIM SEED [ROPE_THETA | f0:f1:... [F16 | F32]]
                                           write a synthetic KV safetensors file for
                                           `kvstream encode` (see synthetic_kv)
Python 3 and numpy only.
"""
import json
import math
import struct
import sys
import zlib

import numpy as np

MAGIC = 0x4353564B
FORMAT_VERSION = 1
CODEC_KVS = 6
HEADER_BYTES = 48
SUBSTREAM_SYMBOLS = 16384
MAX_RANGE = 120
FIRST_TABLE_J = 42  # spread index of table 0
LAST_TABLE_J = 96   # spread index of the last table (no raw bits up to here)

# floor(exp(-1 / (2 sigma_j^2)) * 2^32), sigma_j = 2^((j - 64) / 8), j = 42..96 (codec/kvs_format.cpp).
RATIO_Q32 = [
    0x00000000, 0x00000017, 0x000001e3, 0x00001813, 0x0000ccc1, 0x0004d6c5,
    0x0015fc21, 0x004e81b5, 0x00e4f306, 0x02332393, 0x04b0556e, 0x08dc4319,
    0x0f218de0, 0x17bb0545, 0x22a55547, 0x2fa05396, 0x3e3ce5f7, 0x4df14256,
    0x5e2d58d8, 0x6e6b3af6, 0x7e39bff0, 0x8d418996, 0x9b4597e3, 0xa820ecbe,
    0xb3c2a028, 0xbe29706c, 0xc75f7cf5, 0xcf768ba8, 0xd684ff70, 0xdca38252,
    0xe1eb5127, 0xe6750e8b, 0xea5800a6, 0xeda99fd3, 0xf07d5fde, 0xf2e4a209,
    0xf4eec215, 0xf6a93407, 0xf81fab54, 0xf95c464f, 0xfa67ba65, 0xfb497ef1,
    0xfc07f55f, 0xfca88de2, 0xfd2fe870, 0xfda1f215, 0xfe01feab, 0xfe52df45,
    0xfe96f5a1, 0xfed044dc, 0xff007fd5, 0xff29156c, 0xff4b3afd, 0xff67f547,
    0xff801ffa,
]
TABLES = len(RATIO_Q32)


class CorruptStream(ValueError):
    pass


def _fail(offset, what):
    raise CorruptStream("kvs stream: byte %d: %s" % (offset, what))


# ---------------------------------------------------------------- tables

def _spread_to_table(j):
    """Spread index j -> (table index k, raw low bits b)."""
    if j <= LAST_TABLE_J:
        return max(j, FIRST_TABLE_J) - FIRST_TABLE_J, 0
    b = (j - LAST_TABLE_J + 7) // 8
    return j - 8 * b - FIRST_TABLE_J, b


def build_table(counts):
    """rans::build_table: every symbol >= 1/65536, the rest proportional,
    the rounding remainder to the (first) most likely symbol."""
    n = len(counts)
    total = sum(counts)
    spare = 65536 - n
    freq = []
    largest = 0
    for s, c in enumerate(counts):
        f = 1 + ((c * spare) // total if total else spare // n)
        freq.append(f)
        if f > freq[largest]:
            largest = s
    freq[largest] += 65536 - sum(freq)
    cum = [0]
    for f in freq:
        cum.append(cum[-1] + f)
    return freq, cum


def _upper(x):
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def _centroid_offset(s, sigma):
    """s minus the centroid of [s - 1/2, s + 1/2] under N(0, sigma^2), s >= 1."""
    a, b = (s - 0.5) / sigma, (s + 0.5) / sigma
    mass = _upper(a) - _upper(b)
    if a > 30 or not mass > 1e-280:
        # Far tail (the mass underflows): the exponential tail's centroid.
        c = min(float(s), (s - 0.5) + sigma * sigma / (s - 0.5))
    else:
        pdf = (math.exp(-0.5 * a * a) - math.exp(-0.5 * b * b)) / math.sqrt(2 * math.pi)
        c = min(max(sigma * pdf / mass, s - 0.5), s + 0.5)
    return s - c


def _matching_sigma(ratio):
    """The sigma whose bins 0 and 1 have the probability ratio `ratio`
    (geometric bisection in [1e-3, 1e3], 100 steps)."""
    if ratio <= 0:
        return 1e-3
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        p0 = 1 - 2 * _upper(0.5 / mid)
        p1 = _upper(0.5 / mid) - _upper(1.5 / mid)
        if p1 / p0 < ratio:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


class GaussTable:
    def __init__(self, k):
        r = RATIO_Q32[k]
        r2 = (r * r) >> 32
        w = [1 << 31]
        a = r
        rng = 0
        for s in range(1, MAX_RANGE + 1):
            ws = (w[-1] * a) >> 32
            if ws == 0:
                break
            w.append(ws)
            rng = s
            a = (a * r2) >> 32
        rng = max(rng, 1)
        while len(w) <= rng:
            w.append(0)
        self.range = rng
        counts = [0] + [w[abs(s)] for s in range(-rng, rng + 1)]
        self.freq, self.cum = build_table(counts)
        slot_sym = np.repeat(np.arange(len(self.freq), dtype=np.int32), self.freq)
        self.lookup = slot_sym.tolist()  # slot -> symbol
        # Centroid offsets per symbol (index 1 + range + s), float32.
        sigma = _matching_sigma(w[1] / w[0])
        off = [0.0] * (2 * rng + 2)
        for s in range(1, rng + 1):
            o = round(_centroid_offset(s, sigma) * 65536.0) / 65536.0  # ties to even, as nearbyint
            off[1 + rng + s] = o
            off[1 + rng - s] = -o
        self.offset = np.array(off, dtype=np.float32)


_TABLES = {}


def gauss_table(k):
    if k not in _TABLES:
        _TABLES[k] = GaussTable(k)
    return _TABLES[k]


# ---------------------------------------------------------------- readers

class BitReader:
    """Bits from the lowest bit of each byte up; data[begin:end]."""

    def __init__(self, data, begin, end, where):
        self.data, self.begin, self.end, self.where = data, begin, end, where
        self.acc = int.from_bytes(data[begin:end], "little")
        self.pos = 0
        self.nbits = 8 * (end - begin)

    def bits(self, n):
        if self.pos + n > self.nbits:
            _fail(self.end, "%s: bits run past the end" % self.where)
        v = (self.acc >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return v

    def bit(self):
        return self.bits(1)

    def finish(self):
        """Padding bits 0 and no byte left over."""
        used = (self.pos + 7) // 8
        if self.begin + used != self.end:
            _fail(self.begin + used, "%s: %d bytes left over" % (self.where, self.end - self.begin - used))
        if self.acc >> self.pos:
            _fail(self.end - 1, "%s: padding bits not 0" % self.where)


def read_varint(data, pos, end, where):
    """A u32 as unsigned LEB128: 7 bits per byte, lowest group first, high
    bit = more; at most 5 bytes, the fifth at most 0x0f."""
    v = 0
    for shift in range(0, 35, 7):
        if pos >= end:
            _fail(pos, "%s: varint runs past the end" % where)
        byte = data[pos]
        pos += 1
        if shift == 28 and byte > 0x0F:
            _fail(pos - 1, "%s: varint too long" % where)
        v |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return v, pos
    _fail(pos, "%s: varint too long" % where)


def unzigzag(u):
    return (u >> 1) ^ -(u & 1)


def rans_decode(data, begin, length, table, n, where):
    """Decodes n symbols of one rANS stream data[begin:begin+length]: initial
    state u32 LE, x -> freq (x >> 16) + (x & 0xffff) - cum, renormalize by
    shifting bytes in (x << 8 | byte) while x < 2^23; the stream must be
    consumed exactly and end in the encoder's initial state 2^23."""
    end = begin + length
    if length < 4:
        _fail(begin, "%s: rANS stream shorter than its 4-byte state" % where)
    x = int.from_bytes(data[begin:begin + 4], "big")
    if x < (1 << 23):
        _fail(begin, "%s: rANS initial state below 2^23" % where)
    pos = begin + 4
    lookup, freq, cum = table.lookup, table.freq, table.cum
    out = [0] * n
    for i in range(n):
        slot = x & 0xFFFF
        s = lookup[slot]
        out[i] = s
        x = (freq[s] * (x >> 16) + slot - cum[s]) & 0xFFFFFFFF  # u32 arithmetic
        while x < 0x800000:
            if pos >= end:
                _fail(end, "%s: rANS stream ends early (symbol %d of %d)" % (where, i, n))
            x = ((x << 8) | data[pos]) & 0xFFFFFFFF
            pos += 1
    if pos != end:
        _fail(pos, "%s: %d rANS bytes left over" % (where, end - pos))
    if x != 0x800000:
        _fail(end, "%s: rANS end state 0x%x is not the initial 0x800000" % (where, x))
    return out


def _residuals(symbols, tab, bits_of, extras, where):
    """s per symbol: escape (0) -> 32 extra bits two's complement; else
    s_hi * 2^b + b extra bits. Returns (s list, centroid-eligible flags)."""
    rng = tab.range
    out = []
    plain = []
    for i, sym in enumerate(symbols):
        b = bits_of(i)
        if sym == 0:
            v = extras.bits(32)
            out.append(v - (1 << 32) if v & 0x80000000 else v)
            plain.append(False)
        else:
            s_hi = sym - 1 - rng
            if b:
                out.append(s_hi * (1 << b) + extras.bits(b))
            else:
                out.append(s_hi)
            plain.append(b == 0)
    return out, plain


def _int_vector(data, pos, end, n, where):
    """u8 spread index, varint zigzag centre, varint L, L bytes rANS, varint E, E bytes extras."""
    if pos >= end:
        _fail(pos, "%s: missing" % where)
    j = data[pos]
    pos += 1
    k, b = _spread_to_table(j)
    zc, pos = read_varint(data, pos, end, where + " centre")
    c = unzigzag(zc)
    length, pos = read_varint(data, pos, end, where + " rANS length")
    if length > end - pos:
        _fail(pos, "%s: rANS length %d past the section's end" % (where, length))
    tab = gauss_table(k)
    syms = rans_decode(data, pos, length, tab, n, where)
    pos += length
    e, pos = read_varint(data, pos, end, where + " extras length")
    if e > end - pos:
        _fail(pos, "%s: extras length %d past the section's end" % (where, e))
    extras = BitReader(data, pos, pos + e, where + " extras")
    s, _ = _residuals(syms, tab, lambda i: b, extras, where)
    extras.finish()
    return [c + v for v in s], pos + e


# ---------------------------------------------------------------- decode

def parse_header(data):
    n = len(data)
    if n < 52:
        _fail(0, "stream of %d bytes is shorter than 52" % n)
    (magic, version, codec, level, dtype, flags, layers, heads, dim, token_begin, tokens, nsec,
     model_hash) = struct.unpack_from("<IHHBBHIIIQIIQ", data, 0)
    if magic != MAGIC:
        _fail(0, "bad magic 0x%08x" % magic)
    if version != FORMAT_VERSION:
        _fail(4, "format version %d, expected %d" % (version, FORMAT_VERSION))
    crc = struct.unpack_from("<I", data, n - 4)[0]
    if zlib.crc32(bytes(data[:n - 4])) != crc:
        _fail(n - 4, "CRC mismatch")
    if codec != CODEC_KVS:
        _fail(6, "codec id %d is not kvs (6)" % codec)
    if dtype > 2:
        _fail(9, "dtype %d" % dtype)
    for off, name, v in ((12, "layers", layers), (16, "kv_heads", heads), (20, "head_dim", dim)):
        if not 1 <= v <= 1024:
            _fail(off, "%s %d not in 1..1024" % (name, v))
    if not 1 <= tokens <= (1 << 20):
        _fail(32, "tokens %d not in 1..2^20" % tokens)
    if layers * 2 * heads * dim * tokens > (1 << 28):
        _fail(12, "more than 2^28 values")
    if nsec > (1 << 24) or HEADER_BYTES + 4 * nsec > n - 4:
        _fail(36, "section count %d does not fit" % nsec)
    sizes = struct.unpack_from("<%dI" % nsec, data, HEADER_BYTES)
    pos = HEADER_BYTES + 4 * nsec
    sections = []
    for i, size in enumerate(sizes):
        if size > n - 4 - pos:
            _fail(HEADER_BYTES + 4 * i, "section %d of %d bytes past the end" % (i, size))
        sections.append((pos, pos + size))
        pos += size
    if pos != n - 4:
        _fail(pos, "sections end %d bytes before the CRC" % (n - 4 - pos))
    header = dict(version=version, codec=codec, level=level, dtype=dtype, flags=flags, layers=layers,
                  kv_heads=heads, head_dim=dim, token_begin=token_begin, tokens=tokens,
                  sections=nsec, model_hash=model_hash)
    return header, sections


def decode(stream):
    data = memoryview(bytes(stream))
    header, sections = parse_header(data)
    L, H, D, T = header["layers"], header["kv_heads"], header["head_dim"], header["tokens"]
    flags = header["flags"]
    if flags & ~7 or flags & 6 == 6:
        _fail(10, "kvs flags 0x%x" % flags)
    centroid = bool(flags & 1)
    has_table = bool(flags & 2)
    per_layer = bool(flags & 4)
    planes, nheads, C = 2 * L, 2 * L * H, H * D
    if len(sections) < 3:
        _fail(36, "kvs needs at least 3 sections, has %d" % len(sections))

    # Section 0: parameters, starting with the RoPE description (R bytes).
    p0, p1 = sections[0]

    def f32_at(at):
        if at + 4 > p1:
            _fail(at, "parameters section ends inside the RoPE description")
        return float(np.frombuffer(data, dtype="<f4", count=1, offset=at)[0])

    def base_at(at):  # -> (pair frequencies or None, bytes read)
        theta = f32_at(at)
        if theta != 0.0 and (not (theta > 1.0 and math.isfinite(theta)) or D % 2):
            _fail(at, "rope_theta %r (must be 0, or > 1 with even head_dim)" % theta)
        return ([math.pow(theta, -2.0 * i / D) for i in range(D // 2)] if theta else None), 4

    def table_at(at):
        if D % 2:
            _fail(20, "RoPE table with odd head_dim %d" % D)
        freqs = [f32_at(at + 4 * i) for i in range(D // 2)]
        for i, f in enumerate(freqs):
            if not 0.0 <= f <= 1000.0:
                _fail(at + 4 * i, "RoPE frequency %r not in [0, 1000]" % f)
        return freqs, 2 * D

    if per_layer:
        if p0 >= p1:
            _fail(p0, "parameters section ends inside the RoPE description")
        n = data[p0]
        if not 1 <= n <= 4:
            _fail(p0, "%d RoPE tables (1 to 4)" % n)
        at = p0 + 1
        tables = []
        for _ in range(n):
            if at >= p1:
                _fail(at, "parameters section ends inside the RoPE description")
            form = data[at]
            if form > 1:
                _fail(at, "RoPE table form %d" % form)
            freqs, size = (table_at if form else base_at)(at + 1)
            tables.append(freqs)
            at += 1 + size
        if at + L > p1:
            _fail(at, "parameters section ends inside the RoPE description")
        layer_table = list(data[at:at + L])
        for layer, t in enumerate(layer_table):
            if t >= n:
                _fail(at + layer, "layer %d's RoPE table %d of %d" % (layer, t, n))
        layer_freqs = [tables[t] for t in layer_table]
        rope_bytes = at + L - p0
        header["rope_layers"] = layer_table
    else:
        freqs, rope_bytes = (table_at if has_table else base_at)(p0)
        layer_freqs = [freqs] * L
        if has_table:
            header["rope_inv_freq"] = freqs
        else:
            header["rope_theta"] = f32_at(p0)
    if p1 - p0 != rope_bytes + 4 * planes + nheads:
        _fail(p0, "parameters section of %d bytes, expected %d" % (p1 - p0, rope_bytes + 4 * planes + nheads))
    steps = np.frombuffer(data, dtype="<f4", count=planes, offset=p0 + rope_bytes).copy()
    for i, st in enumerate(steps):
        if not 1e-20 <= float(st) <= 1e20:
            _fail(p0 + rope_bytes + 4 * i, "step %r not in 1e-20..1e20" % float(st))
    modes = bytes(data[p0 + rope_bytes + 4 * planes:p1])
    header["steps"] = steps.tolist()
    header["row_modes"] = list(modes)

    # Section 1: row references -> per head: literal tokens and source of every token.
    r0, r1 = sections[1]
    bits = BitReader(data, r0, r1, "row references")
    literals = []  # per head: list of literal tokens
    sources = []   # per head: list (token -> literal token it copies, or itself)
    last_ref = None
    for h, mode in enumerate(modes):
        if mode == 0:
            literals.append(list(range(T)))
            sources.append(list(range(T)))
        elif mode == 1:
            mtf, lit, src = [], [], []
            for t in range(T):
                n = 0
                while bits.bit():
                    n += 1
                    if n > 24:
                        _fail(r0 + bits.pos // 8, "head %d token %d: row code longer than 24" % (h, t))
                v = (1 << n) | bits.bits(n)
                rank = v - 1
                if rank == 0:
                    lit.append(t)
                    src.append(t)
                    mtf.insert(0, t)
                else:
                    if rank > len(mtf):
                        _fail(r0 + bits.pos // 8, "head %d token %d: rank %d past %d literal rows" % (h, t, rank, len(mtf)))
                    s = mtf.pop(rank - 1)
                    mtf.insert(0, s)
                    src.append(s)
            literals.append(lit)
            sources.append(src)
            last_ref = h
        elif mode == 2:
            if last_ref is None:
                _fail(p0 + rope_bytes + 4 * planes + h, "head %d: row mode 2 without an earlier head of mode 1" % h)
            literals.append(literals[last_ref])
            sources.append(sources[last_ref])
            last_ref = h
        else:
            _fail(p0 + rope_bytes + 4 * planes + h, "head %d: row mode %d" % (h, mode))
    bits.finish()

    # Section 2: channel models.
    c0, c1 = sections[2]
    pos = c0
    spread = []
    centre = []
    for p in range(planes):
        js, pos = _int_vector(data, pos, c1, C, "plane %d spread indices" % p)
        ms, pos = _int_vector(data, pos, c1, C, "plane %d centres" % p)
        for i, j in enumerate(js):
            if not 0 <= j <= 255:
                _fail(pos, "plane %d channel %d: spread index %d" % (p, i, j))
        for i, m in enumerate(ms):
            if abs(m) > (1 << 29):
                _fail(pos, "plane %d channel %d: centre %d" % (p, i, m))
        spread += js
        centre += ms
    if pos != c1:
        _fail(pos, "channel models: %d bytes left over" % (c1 - pos))

    # Groups by table index; the substream sections.
    groups = [[] for _ in range(TABLES)]
    chan_tb = []
    for ch, j in enumerate(spread):
        k, b = _spread_to_table(j)
        groups[k].append(ch)
        chan_tb.append((k, b))
    counts = []
    expected = 3
    for k in range(TABLES):
        n = sum(len(literals[ch // D]) for ch in groups[k])
        counts.append(n)
        expected += -(-n // SUBSTREAM_SYMBOLS)
    if len(sections) != expected:
        _fail(36, "%d sections, the channel models need %d" % (len(sections), expected))

    # Quantized values of literal rows: q per (channel, literal index).
    qvals = np.zeros((planes * C, T), dtype=np.float32)  # x' before rotation, at literal rows
    stats = dict(escapes=0, raw_bit_channels=sum(1 for _, b in chan_tb if b), substreams={},
                 copied_rows=sum(T - len(literals[h]) for h in range(nheads)))
    header["stats"] = stats
    sec = 3
    for k in range(TABLES):
        if not counts[k]:
            continue
        stats["substreams"][k] = -(-counts[k] // SUBSTREAM_SYMBOLS)
        tab = gauss_table(k)
        # The group's symbols in order: (channel, literal token).
        owner = []  # per symbol: channel
        for ch in groups[k]:
            owner.extend([ch] * len(literals[ch // D]))
        syms_all = []
        s_all = []
        plain_all = []
        for start in range(0, counts[k], SUBSTREAM_SYMBOLS):
            n = min(SUBSTREAM_SYMBOLS, counts[k] - start)
            a, e = sections[sec]
            where = "section %d (table %d, symbols %d..%d)" % (sec, k, start, start + n)
            length, q = read_varint(data, a, e, where)
            if length > e - q:
                _fail(q, "%s: rANS length %d past the section's end" % (where, length))
            syms = rans_decode(data, q, length, tab, n, where)
            extras = BitReader(data, q + length, e, where + " extras")
            s, plain = _residuals(syms, tab, lambda i: chan_tb[owner[start + i]][1], extras, where)
            extras.finish()
            syms_all += syms
            stats["escapes"] += syms.count(0)
            s_all += s
            plain_all += plain
            sec += 1
        i = 0
        for ch in groups[k]:
            plane = ch // C
            step = steps[plane]
            m = centre[ch]
            lit = literals[ch // D]
            n = len(lit)
            s = np.array(s_all[i:i + n], dtype=np.int64)
            q = m + s
            if np.any(np.abs(q) > (1 << 30)):
                _fail(sections[3][0], "channel %d: |q| > 2^30" % ch)
            xq = q.astype(np.float32)
            if centroid:
                sy = np.array(syms_all[i:i + n], dtype=np.int64)
                pl = np.array(plain_all[i:i + n], dtype=bool)
                off = np.where(pl, tab.offset[sy], np.float32(0))
                xq = (xq - off.astype(np.float32)).astype(np.float32)
            qvals[ch, lit] = (xq * np.float32(step)).astype(np.float32)
            i += n

    out = qvals.reshape(planes, H, D, T)
    # Copied rows take their source's x'.
    for h in range(nheads):
        src = sources[h]
        if src != list(range(T)):
            plane, head = divmod(h, H)
            out[plane, head] = out[plane, head][:, src]
    out = np.ascontiguousarray(out.transpose(0, 1, 3, 2))  # [plane][head][token][dim]

    # RoPE on keys, each layer at its frequencies.
    half = D // 2
    tb = header["token_begin"]
    for layer in range(L):
        freqs = layer_freqs[layer]
        if freqs is None:
            continue
        cos = np.empty((T, half), dtype=np.float32)
        sin = np.empty((T, half), dtype=np.float32)
        for t in range(T):
            p = float(tb + t)
            for i, f in enumerate(freqs):
                cos[t, i] = math.cos(p * f)
                sin[t, i] = math.sin(p * f)
        x = out[2 * layer]
        lo, hi = x[:, :, :half].copy(), x[:, :, half:].copy()
        x[:, :, :half] = lo * cos - hi * sin
        x[:, :, half:] = hi * cos + lo * sin
    return header, out.reshape(L, 2, H, T, D)


# ---------------------------------------------------------------- files and checks

def read_kvs_file(path):
    """Chunks of a multi-chunk `.kvs` file."""
    data = open(path, "rb").read()
    if len(data) < 12:
        raise CorruptStream("%s: shorter than the 12-byte header" % path)
    magic, version, n = struct.unpack_from("<III", data, 0)
    if magic != 0x4653564B or version != 1:
        raise CorruptStream("%s: bad magic or version" % path)
    pos, chunks = 12, []
    for i in range(n):
        if pos + 8 > len(data):
            raise CorruptStream("%s: chunk %d: length past the end" % (path, i))
        size = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
        if size > len(data) - pos:
            raise CorruptStream("%s: chunk %d runs past the end" % (path, i))
        chunks.append(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise CorruptStream("%s: %d trailing bytes" % (path, len(data) - pos))
    return chunks


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<Q", data, 0)[0]
    meta = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in meta.items():
        if name == "__metadata__":
            continue
        dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[t["dtype"]]
        a, b = t["data_offsets"]
        arr = np.frombuffer(data, dtype=dt, count=(b - a) // np.dtype(dt).itemsize, offset=base + a)
        if t["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(t["shape"])
    return out


def write_safetensors(path, tensors, note, dtype="F16"):
    """tensors: name -> array, written as F16 or F32 (the layout kvstream's KV files use)."""
    meta, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f2" if dtype == "F16" else "<f4").tobytes()
        meta[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    meta["__metadata__"] = {"format": "kvstream-kv", "note": note}
    head = json.dumps(meta).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def synthetic_kv(path, layers, heads, tokens, dim, seed, rope_theta=10000.0, inv_freq=None, dtype="F16"):
    """A synthetic KV cache (fp16 safetensors, [heads, tokens, dim] per layer
    key and value) exercising kvs's paths: layer 0 rows are a function of a
    token from a 24-entry vocabulary (repeated rows), other layers AR(1) with
    per-channel means; one channel per plane spread 2^12 wide, one narrow
    around 200 (large q with centroid offsets), rare outliers
    of 3e4 (escapes); keys rotated by RoPE at positions 0..tokens-1. Values
    are fp16-representable; dtype F32 stores them as float32, so that
    `kvstream decode` writes float32 (it writes the input's dtype)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 24, size=tokens)
    out = {}
    half = dim // 2
    if inv_freq is None:
        inv_freq = [rope_theta ** (-2.0 * i / dim) for i in range(half)] if rope_theta else None
    for l in range(layers):
        for kind in ("key", "value"):
            if l == 0:
                vocab = rng.normal(0, 1.5, size=(heads, 24, dim)) + rng.normal(0, 2, size=(heads, 1, dim))
                x = vocab[:, ids, :]
            else:
                x = np.empty((heads, tokens, dim))
                e = rng.normal(0, 1, size=(heads, tokens, dim))
                x[:, 0] = e[:, 0]
                for t in range(1, tokens):
                    x[:, t] = 0.9 * x[:, t - 1] + 0.45 * e[:, t]
                x = x * rng.uniform(0.2, 3, size=(heads, 1, dim)) + rng.normal(0, 3, size=(heads, 1, dim))
                x[0, :, 1] = rng.normal(0, 4096, size=tokens)  # a wide channel: raw low bits
                x[heads - 1, :, 2] = 200 + rng.normal(0, 0.3, size=tokens)  # q - o not exact in float32
                hit = rng.random(size=x.shape) < 2e-4
                x[hit] = rng.choice([-3e4, 3e4], size=int(hit.sum()))  # outliers: escapes
            if kind == "key" and inv_freq is not None:
                ang = np.arange(tokens)[:, None] * np.array(inv_freq)[None, :]
                c, s = np.cos(ang), np.sin(ang)
                lo, hi = x[..., :half].copy(), x[..., half:].copy()
                x = np.concatenate([lo * c - hi * s, hi * c + lo * s], axis=-1)
            out["layers.%d.%s" % (l, kind)] = np.clip(x, -65000, 65000).astype(np.float16)
    write_safetensors(path, out, "synthetic kvs reference-decoder cache, seed %d" % seed, dtype)


def check_golden(directory):
    import glob
    import os
    paths = sorted(glob.glob(os.path.join(directory, "kvs*.kvsc")))
    if not paths:
        print("no kvs*.kvsc in %s" % directory)
        return 1
    bad = 0
    for path in paths:
        want = int(open(path[:-5] + ".crc").read().strip())
        try:
            header, values = decode(open(path, "rb").read())
        except CorruptStream as e:
            print("%s: %s" % (path, e))
            bad += 1
            continue
        got = zlib.crc32(values.astype("<f4").tobytes())
        ok = got == want
        bad += not ok
        print("%-28s level %d flags %d  crc %10d %s %10d" % (os.path.basename(path), header["level"], header["flags"],
                                                          got, "==" if ok else "!=", want))
    return 1 if bad else 0


def compare_file(kvs_path, safetensors_path):
    """Every chunk of kvs_path decoded here against `kvstream decode`'s output."""
    tensors = read_safetensors(safetensors_path)
    chunks = read_kvs_file(kvs_path)
    # `kvstream decode` writes the input's dtype: float32 compares bit for
    # bit, fp16 / bf16 only after rounding these values the same way.
    at = next(iter(tensors.values())).dtype
    layers = len([k for k in tensors if k.endswith(".key")])
    ref = np.stack([np.stack([tensors["layers.%d.key" % l], tensors["layers.%d.value" % l]]) for l in range(layers)])
    # ref: [layers][2][heads][context tokens][dim]
    for ci, chunk in enumerate(chunks):
        try:
            header, values = decode(chunk)
        except CorruptStream as e:
            print("%s chunk %d: %s" % (kvs_path, ci, e))
            return 1
        tb, T = header["token_begin"], header["tokens"]
        part = ref[:, :, :, tb:tb + T, :].astype(np.float32)
        if at == np.float16:
            values = values.astype(np.float16).astype(np.float32)
        same = np.array_equal(part.view(np.uint32), values.view(np.uint32))
        if not same:
            diff = np.abs(part.astype(np.float64) - values.astype(np.float64))
            idx = np.argwhere(part.view(np.uint32) != values.view(np.uint32))[0]
            print("%s chunk %d: MISMATCH max |diff| %g, first at [layer,kind,head,token,dim]=%s: C++ %r ref %r"
                  % (kvs_path, ci, diff.max(), idx.tolist(), float(part[tuple(idx)]), float(values[tuple(idx)])))
            return 1
        print("  chunk %d: tokens %d+%d level %d flags %d rope %s modes %s escapes %d raw-bit channels %d copied rows %d"
              " substreams %d (tables with >1: %d)"
              % (ci, tb, T, header["level"], header["flags"],
                 "per layer %s" % header["rope_layers"] if "rope_layers" in header
                 else "table" if "rope_inv_freq" in header else header["rope_theta"],
                 "".join(str(m) for m in header["row_modes"]), header["stats"]["escapes"],
                 header["stats"]["raw_bit_channels"], header["stats"]["copied_rows"],
                 sum(header["stats"]["substreams"].values()),
                 sum(1 for v in header["stats"]["substreams"].values() if v > 1)))
    print("%s: %d chunks bit-identical to %s%s" % (kvs_path, len(chunks), safetensors_path,
                                                  "" if at == np.float32 else " (after rounding to %s)" % at))
    return 0


def _split(stream):
    """(48-byte header, list of section bytes) of a stream."""
    n = struct.unpack_from("<I", stream, 36)[0]
    pos, secs = HEADER_BYTES + 4 * n, []
    for size in struct.unpack_from("<%dI" % n, stream, HEADER_BYTES):
        secs.append(stream[pos:pos + size])
        pos += size
    return stream[:HEADER_BYTES], secs


def _join(header, secs):
    """A stream from a header and sections, with its offset table and CRC redone."""
    b = bytearray(header) + b"".join(struct.pack("<I", len(x)) for x in secs) + b"".join(secs)
    b[36:40] = struct.pack("<I", len(secs))
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))


def self_test(directory):
    """Corrupt variants of a golden stream (CRC redone where the point is a
    later check) must raise CorruptStream; the C++ decoder rejects each too."""
    import os
    good = open(os.path.join(directory, "kvs-L0.kvsc"), "rb").read()
    decode(good)
    head, secs = _split(good)
    modes = 4 + 4 * 2 * struct.unpack_from("<I", good, 12)[0]  # in section 0, after theta and the steps

    def edit(i, f):
        s = list(secs)
        s[i] = bytes(f(bytearray(s[i])))
        return _join(head, s)

    def poke(at, v):
        def f(b):
            b[at] = v
            return b
        return f

    cases = {
        "flipped byte (CRC)": good[:60] + bytes([good[60] ^ 1]) + good[61:],
        "truncated": good[:-10],
        "flags bit 2 on a stream of one RoPE": _join(head[:10] + struct.pack("<H", 5) + head[12:], secs),
        "flags bits 1 and 2": _join(head[:10] + struct.pack("<H", 7) + head[12:], secs),
        "flags bit 3": _join(head[:10] + struct.pack("<H", 9) + head[12:], secs),
        "row mode 3": edit(0, poke(modes + 1, 3)),
        "row mode 2 on the first head": edit(0, poke(modes, 2)),
        "byte left after the row references": edit(1, lambda b: b + b"\0"),
        "byte left after the channel models": edit(2, lambda b: b + b"\0"),
        "byte left after a substream's extras": edit(3, lambda b: b + b"\0"),
        "rANS byte changed": edit(5, lambda b: poke(3, b[3] ^ 0x40)(b)),
        "substream missing": _join(head, secs[:-1]),
    }
    failures = 0
    for name, stream in cases.items():
        try:
            decode(stream)
            print("self-test: %s: decoded without error" % name)
            failures += 1
        except CorruptStream as e:
            print("self-test: %s -> %s" % (name, e))
    return 1 if failures else 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--golden":
        return check_golden(argv[2])
    if len(argv) == 4 and argv[1] == "--compare":
        return compare_file(argv[2], argv[3])
    if len(argv) >= 8 and argv[1] == "--synthetic":
        # --synthetic OUT LAYERS HEADS TOKENS DIM SEED [ROPE_THETA | f0:f1:... [F16 | F32]]
        rope = argv[8] if len(argv) > 8 else "10000"
        dtype = argv[9] if len(argv) > 9 else "F16"
        inv = [float(v) for v in rope.split(":")] if ":" in rope else None
        synthetic_kv(argv[2], *[int(v) for v in argv[3:8]], rope_theta=float(rope) if inv is None else 0.0,
                     inv_freq=inv, dtype=dtype)
        return 0
    if len(argv) == 3 and argv[1] == "--self-test":
        return self_test(argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
