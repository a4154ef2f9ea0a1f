#!/usr/bin/env python3
"""Writes tests/llm/data/golden/: a tiny Llama checkpoint (config.json,
model.safetensors) and expected.json with its logits, computed here in plain
Python (float64) following HF transformers' LlamaForCausalLM. Independent of
the C++ code: its own safetensors writer, RoPE (llama3 scaling), GQA,
RMSNorm, SwiGLU. Deterministic; rerun to regenerate:
    python3 tests/llm/data/make_golden.py
"""
import json, math, os, struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
cfg = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 16,
    "rms_norm_eps": 1e-5, "rope_theta": 10.0, "tie_word_embeddings": False, "torch_dtype": "float32",
    "hidden_act": "silu",
    "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                     "original_max_position_embeddings": 16},
}
V, H, I, L = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
NH, KVH, HD = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

state = [12345]
def rnd():  # LCG in [-1, 1), rounded to float32
    state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    x = ((state[0] >> 40) / float(1 << 24)) * 2.0 - 1.0
    return struct.unpack("<f", struct.pack("<f", x))[0]

def mat(rows, cols, scale):
    return [[struct.unpack("<f", struct.pack("<f", rnd() * scale))[0] for _ in range(cols)] for _ in range(rows)]

def vec(n):
    return [struct.unpack("<f", struct.pack("<f", 1.0 + 0.5 * rnd()))[0] for _ in range(n)]

W = {"model.embed_tokens.weight": mat(V, H, 1.0)}
for i in range(L):
    p = f"model.layers.{i}."
    W[p + "self_attn.q_proj.weight"] = mat(NH * HD, H, 0.3)
    W[p + "self_attn.k_proj.weight"] = mat(KVH * HD, H, 0.3)
    W[p + "self_attn.v_proj.weight"] = mat(KVH * HD, H, 0.3)
    W[p + "self_attn.o_proj.weight"] = mat(H, NH * HD, 0.3)
    W[p + "mlp.gate_proj.weight"] = mat(I, H, 0.3)
    W[p + "mlp.up_proj.weight"] = mat(I, H, 0.3)
    W[p + "mlp.down_proj.weight"] = mat(H, I, 0.3)
    W[p + "input_layernorm.weight"] = [vec(H)]
    W[p + "post_attention_layernorm.weight"] = [vec(H)]
W["model.norm.weight"] = [vec(H)]
W["lm_head.weight"] = mat(V, H, 0.5)

def write_safetensors(path):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, m in W.items():
        flat = [x for row in m for x in row]
        data = struct.pack(f"<{len(flat)}f", *flat)
        shape = [len(m[0])] if name.endswith("norm.weight") else [len(m), len(m[0])]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def inv_freq():
    base, dim, s = cfg["rope_theta"], HD, cfg["rope_scaling"]
    inv = [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]
    old, lo, hi, fac = s["original_max_position_embeddings"], s["low_freq_factor"], s["high_freq_factor"], s["factor"]
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < old / hi:
            out.append(f)
        elif wl > old / lo:
            out.append(f / fac)
        else:
            sm = (old / wl - lo) / (hi - lo)
            out.append((1 - sm) * f / fac + sm * f)
    return out

def linear(x, w):  # x [n][in], w [out][in]
    return [[sum(a * b for a, b in zip(row, wr)) for wr in w] for row in x]

def rms(x, w):
    out = []
    for row in x:
        r = 1.0 / math.sqrt(sum(v * v for v in row) / len(row) + cfg["rms_norm_eps"])
        out.append([v * r * g for v, g in zip(row, w[0])])
    return out

def rope(v, pos, inv):  # v: HD values of one head at position pos (rotate_half)
    half = HD // 2
    out = [0.0] * HD
    for i in range(half):
        c, s = math.cos(pos * inv[i]), math.sin(pos * inv[i])
        out[i] = v[i] * c - v[i + half] * s
        out[i + half] = v[i + half] * c + v[i] * s
    return out

def forward(tokens):
    inv = inv_freq()
    x = [list(W["model.embed_tokens.weight"][t]) for t in tokens]
    n = len(tokens)
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q, k, v = (linear(h, W[p + f"self_attn.{m}_proj.weight"]) for m in "qkv")
        qh = [[rope(q[t][a * HD:(a + 1) * HD], t, inv) for a in range(NH)] for t in range(n)]
        kh = [[rope(k[t][a * HD:(a + 1) * HD], t, inv) for a in range(KVH)] for t in range(n)]
        vh = [[v[t][a * HD:(a + 1) * HD] for a in range(KVH)] for t in range(n)]
        att = [[0.0] * (NH * HD) for _ in range(n)]
        for a in range(NH):
            g = a // (NH // KVH)  # repeat_kv: query head a uses kv head a // group
            for t in range(n):
                sc = [sum(qq * kk for qq, kk in zip(qh[t][a], kh[j][g])) / math.sqrt(HD) for j in range(t + 1)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = sum(e)
                for d in range(HD):
                    att[t][a * HD + d] = sum(e[j] / z * vh[j][g][d] for j in range(t + 1))
        o = linear(att, W[p + "self_attn.o_proj.weight"])
        x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, o)]
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        gt, up = linear(h, W[p + "mlp.gate_proj.weight"]), linear(h, W[p + "mlp.up_proj.weight"])
        act = [[gg / (1 + math.exp(-gg)) * uu for gg, uu in zip(r1, r2)] for r1, r2 in zip(gt, up)]
        d = linear(act, W[p + "mlp.down_proj.weight"])
        x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, d)]
        if l == L - 1:
            last_k = [[kh[t][a] for t in range(n)] for a in range(KVH)]
    return linear(rms(x, W["model.norm.weight"]), W["lm_head.weight"]), last_k

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
write_safetensors(os.path.join(OUT, "model.safetensors"))
tokens = [3, 17, 0, 31, 8, 8, 12, 25, 4, 19]
logits, last_k = forward(tokens)
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k,
               "inv_freq": inv_freq()}, f)
