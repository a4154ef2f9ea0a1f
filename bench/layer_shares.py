#!/usr/bin/env python3
"""How evenly cachegen's bytes spread over a chunk's layers.

The simulator sends a windowed target's chunk with only the layers that read
it and takes each layer as an equal share of the chunk's bytes
(docs/simulator.md, "Sliding-window layers"). cachegen quantizes early layers
with more bins and each layer's values have their own entropy, so the real
shares differ. This script measures them: it dumps a real KV cache, encodes it
with `kvstream encode --codec cachegen` at every level, and attributes each
chunk's bytes to layers from the container's section table
(docs/bitstream.md): the rANS streams by (layer, kind, channel, block), the
frequency tables by their size per layer, the scales and the header evenly.
It prints per level the largest and smallest layer share (x L: 1 = equal),
and, for the windowing patterns of real models, how far the equal-share bytes
of a chunk that carries only the full-attention layers are from the measured
ones.

  /usr/bin/python3 bench/layer_shares.py --kvstream build/apps/kvstream \\
      --model models/default --text data/retrieval/... -o /tmp/shares

With --profile FILE it prints the same table for every codec of a profile
from the shares `kvstream profile` recorded (Codec::layer_shares: cachegen's
sections as here, kvs's shared substreams split by symbols; none recorded:
an even split), e.g. to check the C++ attribution against this one:

  /usr/bin/python3 bench/layer_shares.py --profile P.json
"""
import json
import argparse
import os
import struct
import subprocess
import sys

# codec/cachegen.h: K bins first/middle/last third, V bins first 1/16 / rest.
LADDER = [((64, 64, 64), (64, 64)), ((32, 32, 32), (32, 32)), ((32, 16, 16), (32, 16)),
          ((16, 16, 12), (16, 12)), ((12, 8, 8), (12, 8)), ((8, 6, 6), (8, 6)), ((6, 4, 4), (6, 4))]


def bins(level, kind, layer, layers):
    key, value = LADDER[level]
    if kind == 0:
        first, second = (layers * 10 + 31) // 32, (layers * 20 + 31) // 32
        return key[0 if layer < first else 1 if layer < second else 2]
    first = max(1, (layers * 2 + 31) // 32)
    return value[0 if layer < first else 1]


def chunks_of(path):
    data = open(path, 'rb').read()
    magic, version, n = struct.unpack_from('<III', data, 0)
    if magic != 0x4653564B or version != 1:
        sys.exit(f'{path}: not a .kvs file')
    at = 12
    for _ in range(n):
        (length,) = struct.unpack_from('<Q', data, at)
        yield data[at + 8:at + 8 + length]
        at += 8 + length


def layer_bytes(stream, level):
    """Bytes of a cachegen (scheme=code) chunk attributed to each layer."""
    flags, layers, heads, dim = struct.unpack_from('<HIII', stream, 10)
    (tokens, count) = struct.unpack_from('<II', stream, 32)
    sizes = struct.unpack_from(f'<{count}I', stream, 48)
    channels = heads * dim
    blocks = -(-tokens // flags)
    if count != 2 + layers * 2 * channels * blocks:
        sys.exit(f'unexpected section count {count}')
    out = [0.0] * layers
    shared = 48 + 4 * count + 4 + sizes[0]  # header, offsets, CRC, scales: even
    for layer in range(layers):
        out[layer] += shared / layers
        out[layer] += sum(2 * channels * (bins(level, k, layer, layers) - 1) for k in (0, 1))
    if abs(sum(2 * channels * (bins(level, k, l, layers) - 1) for l in range(layers) for k in (0, 1)) - sizes[1]) > 0:
        sys.exit('frequency tables: sizes differ from the documented bins')
    per_layer = 2 * channels * blocks
    for i, size in enumerate(sizes[2:]):
        out[i // per_layer] += size
    assert abs(sum(out) - len(stream)) < 1e-6
    return out


def patterns(layers):
    """Windowed layers of real models' patterns, scaled to `layers`."""
    return {
        'gemma2 (even layers windowed)': [l % 2 == 0 for l in range(layers)],
        'gemma3 (5 of 6 windowed)': [(l + 1) % 6 != 0 for l in range(layers)],
        'qwen2 (upper half windowed)': [l >= layers // 2 for l in range(layers)],
        'lower half windowed': [l < layers // 2 for l in range(layers)],
    }


def table_row(label, per_chunk):
    """One level: the spread of the layer shares and, per pattern, the worst
    error of equal shares for a chunk carrying only the full layers."""
    layers = len(per_chunk[0])
    shares = [b / sum(c) * layers for c in per_chunk for b in c]
    errors = []
    for name, windowed in patterns(layers).items():
        full = [l for l in range(layers) if not windowed[l]]
        worst = 0.0
        for c in per_chunk:
            measured = sum(c[l] for l in full)
            equal = sum(c) * len(full) / layers
            e = equal / measured - 1
            worst = e if abs(e) > abs(worst) else worst
        errors.append(f'{name}: {worst:+.1%}')
    return f'{label} | {min(shares):.3f} .. {max(shares):.3f} | ' + '; '.join(errors)


def from_profile(path):
    profile = json.load(open(path))
    layers = profile['model']['layers']
    for codec in profile['codecs']:
        print(f"{codec['codec']}: level | layer share x L: min .. max | far chunk bytes, equal share / measured - 1")
        for level in range(len(codec['level_names'])):
            per_chunk = [ch['levels'][level].get('layer_shares') or [1 / layers] * layers
                         for ctx in codec['contexts'] for ch in ctx['chunks']]
            print(table_row(f'L{level}', per_chunk))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--profile', help='print the table from this profile\'s recorded layer shares')
    ap.add_argument('--kvstream')
    ap.add_argument('--model')
    ap.add_argument('--text')
    ap.add_argument('--tokens', type=int, default=3000)
    ap.add_argument('-o', '--out')
    a = ap.parse_args()
    if a.profile:
        return from_profile(a.profile)
    if not (a.kvstream and a.model and a.text and a.out):
        ap.error('--kvstream, --model, --text and -o are required without --profile')
    os.makedirs(a.out, exist_ok=True)
    kv = os.path.join(a.out, 'kv.safetensors')
    subprocess.run([a.kvstream, 'kv', 'dump', '--model', a.model, '--text', a.text, '--max-tokens', str(a.tokens),
                    '--kv-dtype', 'fp16', '-o', kv], check=True, stdout=subprocess.DEVNULL)
    print('level | layer share x L: min .. max | far chunk bytes, equal share / measured - 1, per pattern')
    for level in range(len(LADDER)):
        enc = os.path.join(a.out, f'L{level}.kvs')
        subprocess.run([a.kvstream, 'encode', kv, '-o', enc, '--codec', 'cachegen', '--level', str(level)],
                       check=True, stdout=subprocess.DEVNULL)
        print(table_row(f'L{level}', [layer_bytes(c, level) for c in chunks_of(enc)]))


if __name__ == '__main__':
    main()
