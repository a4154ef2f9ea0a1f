#!/usr/bin/env python3
"""Writes tiny Llama-family checkpoints under tests/llm/data/ (config.json,
safetensors weights) with expected.json holding their logits and KV,
computed here in plain Python (float64) following HF transformers'
LlamaForCausalLM / MistralForCausalLM. Independent of the C++ code: its own
safetensors writer (F32, F16, BF16, shards + index), RoPE (default, linear,
dynamic NTK, llama3 scaling), GQA, RMSNorm, SwiGLU, tied embeddings.
Deterministic; rerun to regenerate:
    python3 tests/llm/data/make_golden.py

Cases:
  golden/               llama, llama3 RoPE, GQA, head_dim given, F32.
  golden_tied_dynamic/  llama, tied lm_head (absent from the file), MHA
                        (no num_key_value_heads), dynamic NTK RoPE run past
                        max_position_embeddings, F16 weights, old HF
                        rotary_emb.inv_freq buffers in the file; also the
                        logits of a prefill in chunks (HF recomputes the
                        dynamic frequencies per forward call from its last
                        position; cached keys keep theirs).
  golden_mistral_bf16/  mistral (sliding_window null), GQA 8:2, head_dim 6
                        != hidden/heads, linear RoPE given as v5
                        rope_parameters (rope_theta inside), BF16 weights in
                        two shards with model.safetensors.index.json.
"""
import json, math, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

state = [0]
def rnd():  # LCG in [-1, 1), rounded to float32
    state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    x = ((state[0] >> 40) / float(1 << 24)) * 2.0 - 1.0
    return struct.unpack("<f", struct.pack("<f", x))[0]

def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]

def mat(rows, cols, scale):
    return [[f32(rnd() * scale) for _ in range(cols)] for _ in range(rows)]

def vec(n):
    return [f32(1.0 + 0.5 * rnd()) for _ in range(n)]

# ---- storage dtypes: values are rounded to what the file holds ----
def bf16_bits(x):  # float32 -> bfloat16 bits, round to nearest even
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF

def round_to(x, dtype):
    if dtype == "F32":
        return f32(x)
    if dtype == "F16":
        return struct.unpack("<e", struct.pack("<e", x))[0]
    return struct.unpack("<f", struct.pack("<I", bf16_bits(x) << 16))[0]  # BF16

def pack(flat, dtype):
    if dtype == "F32":
        return struct.pack(f"<{len(flat)}f", *flat)
    if dtype == "F16":
        return struct.pack(f"<{len(flat)}e", *flat)
    return struct.pack(f"<{len(flat)}H", *[bf16_bits(x) for x in flat])

def write_safetensors(path, tensors):  # tensors: [(name, dtype, shape, flat values)]
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape, flat in tensors:
        data = pack(flat, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return off

class Case:
    def __init__(self, cfg, seed, dtype, tie):
        self.cfg = cfg
        self.V, self.H, self.I = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
        self.L, self.NH = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.KVH = cfg.get("num_key_value_heads") or self.NH
        self.HD = cfg.get("head_dim") or self.H // self.NH
        rp = cfg.get("rope_parameters") or {}
        self.theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
        self.rope = dict(cfg.get("rope_scaling") or rp)
        self.rope_type = self.rope.get("rope_type", self.rope.get("type", "default"))
        self.dtype = dtype
        state[0] = seed
        V, H, I, NH, KVH, HD = self.V, self.H, self.I, self.NH, self.KVH, self.HD
        W = {"model.embed_tokens.weight": mat(V, H, 1.0)}
        for i in range(self.L):
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
        if not tie:
            W["lm_head.weight"] = mat(V, H, 0.5)
        self.W = {k: [[round_to(x, dtype) for x in row] for row in m] for k, m in W.items()}
        self.head = self.W["model.embed_tokens.weight"] if tie else self.W["lm_head.weight"]

    def tensors(self):
        out = []
        for name, m in self.W.items():
            shape = [len(m[0])] if name.endswith("norm.weight") else [len(m), len(m[0])]
            out.append((name, self.dtype, shape, [x for row in m for x in row]))
        return out

    def inv_freq(self, seq_len):
        """RoPE inverse frequencies for a forward call whose last position is seq_len - 1."""
        base, dim, s, t = self.theta, self.HD, self.rope, self.rope_type
        if t == "dynamic" and seq_len > self.cfg["max_position_embeddings"]:
            m = self.cfg["max_position_embeddings"]
            base = base * ((s["factor"] * seq_len / m) - (s["factor"] - 1)) ** (dim / (dim - 2))
        inv = [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]
        if t == "linear":
            return [f / s["factor"] for f in inv]
        if t != "llama3":
            return inv
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

    def forward(self, tokens, chunks):
        """Logits of all tokens, run as consecutive forward calls of `chunks` tokens
        each with a growing KV cache; returns (logits, last layer keys, values)."""
        NH, KVH, HD, L, eps = self.NH, self.KVH, self.HD, self.L, self.cfg["rms_norm_eps"]
        W = self.W

        def linear(x, w):  # x [n][in], w [out][in]
            return [[sum(a * b for a, b in zip(row, wr)) for wr in w] for row in x]

        def rms(x, w):
            out = []
            for row in x:
                r = 1.0 / math.sqrt(sum(v * v for v in row) / len(row) + eps)
                out.append([v * r * g for v, g in zip(row, w[0])])
            return out

        def rope(v, pos, inv):  # HD values of one head at position pos (rotate_half)
            half = HD // 2
            out = [0.0] * HD
            for i in range(half):
                c, s = math.cos(pos * inv[i]), math.sin(pos * inv[i])
                out[i] = v[i] * c - v[i + half] * s
                out[i + half] = v[i + half] * c + v[i] * s
            return out

        cache_k = [[] for _ in range(L)]  # per layer: per position [KVH][HD]
        cache_v = [[] for _ in range(L)]
        logits, begin = [], 0
        for n in chunks:
            ids = tokens[begin:begin + n]
            inv = self.inv_freq(begin + n)
            x = [list(W["model.embed_tokens.weight"][t]) for t in ids]
            for l in range(L):
                p = f"model.layers.{l}."
                h = rms(x, W[p + "input_layernorm.weight"])
                q, k, v = (linear(h, W[p + f"self_attn.{m}_proj.weight"]) for m in "qkv")
                qh = [[rope(q[t][a * HD:(a + 1) * HD], begin + t, inv) for a in range(NH)] for t in range(n)]
                cache_k[l] += [[rope(k[t][a * HD:(a + 1) * HD], begin + t, inv) for a in range(KVH)] for t in range(n)]
                cache_v[l] += [[v[t][a * HD:(a + 1) * HD] for a in range(KVH)] for t in range(n)]
                kh, vh = cache_k[l], cache_v[l]
                att = [[0.0] * (NH * HD) for _ in range(n)]
                for a in range(NH):
                    g = a // (NH // KVH)  # repeat_kv: query head a uses kv head a // group
                    for t in range(n):
                        keys = begin + t + 1  # causal
                        sc = [sum(qq * kk for qq, kk in zip(qh[t][a], kh[j][g])) / math.sqrt(HD) for j in range(keys)]
                        m = max(sc)
                        e = [math.exp(s - m) for s in sc]
                        z = sum(e)
                        for d in range(HD):
                            att[t][a * HD + d] = sum(e[j] / z * vh[j][g][d] for j in range(keys))
                o = linear(att, W[p + "self_attn.o_proj.weight"])
                x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, o)]
                h = rms(x, W[p + "post_attention_layernorm.weight"])
                gt, up = linear(h, W[p + "mlp.gate_proj.weight"]), linear(h, W[p + "mlp.up_proj.weight"])
                act = [[gg / (1 + math.exp(-gg)) * uu for gg, uu in zip(r1, r2)] for r1, r2 in zip(gt, up)]
                d = linear(act, W[p + "mlp.down_proj.weight"])
                x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, d)]
            logits += linear(rms(x, W["model.norm.weight"]), self.head)
            begin += n
        T = len(cache_k[-1])
        last_k = [[cache_k[-1][t][a] for t in range(T)] for a in range(KVH)]
        last_v = [[cache_v[-1][t][a] for t in range(T)] for a in range(KVH)]
        return logits, last_k, last_v


def write_cfg(out, cfg):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def golden():
    out = os.path.join(HERE, "golden")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 16,
        "rms_norm_eps": 1e-5, "rope_theta": 10.0, "tie_word_embeddings": False, "torch_dtype": "float32",
        "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                         "original_max_position_embeddings": 16},
    }
    c = Case(cfg, 12345, "F32", tie=False)
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [3, 17, 0, 31, 8, 8, 12, 25, 4, 19]
    logits, last_k, _ = c.forward(tokens, [len(tokens)])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k,
                   "inv_freq": c.inv_freq(len(tokens))}, f)


def golden_tied_dynamic():
    out = os.path.join(HERE, "golden_tied_dynamic")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 40, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 3, "max_position_embeddings": 8, "rms_norm_eps": 1e-6, "rope_theta": 100.0,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}, "tie_word_embeddings": True,
        "torch_dtype": "float16", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": [2, 3],
    }
    c = Case(cfg, 777, "F16", tie=True)
    write_cfg(out, cfg)
    # Old HF checkpoints also hold each layer's (unused) RoPE buffer.
    extra = [(f"model.layers.{i}.self_attn.rotary_emb.inv_freq", "F32", [c.HD // 2], [f32(f) for f in c.inv_freq(1)])
             for i in range(c.L)]
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors() + extra)
    tokens = [5, 39, 0, 12, 7, 7, 30, 21, 2, 18, 33, 9, 14]  # 13 > max_position_embeddings
    chunks = [5, 4, 4]  # ends 5 (<= 8: plain RoPE), 9 and 13 (NTK-scaled)
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    ch_logits, ch_k, ch_v = c.forward(tokens, chunks)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens)), "chunks": chunks, "chunked_logits": ch_logits,
                   "chunked_last_layer_keys": ch_k}, f)


def golden_mistral_bf16():
    out = os.path.join(HERE, "golden_mistral_bf16")
    cfg = {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "vocab_size": 48, "hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 3,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 6, "max_position_embeddings": 32,
        "rms_norm_eps": 1e-5, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "rope_parameters": {"rope_type": "linear", "factor": 2.5, "rope_theta": 50.0},
    }
    c = Case(cfg, 4242, "BF16", tie=False)
    write_cfg(out, cfg)
    ts = c.tensors()
    cut = len(ts) // 2
    weight_map, total = {}, 0
    for i, part in enumerate([ts[:cut], ts[cut:]]):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        total += write_safetensors(os.path.join(out, name), part)
        weight_map.update({t[0]: name for t in part})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    tokens = [11, 47, 3, 3, 29, 0, 16, 40, 8, 25, 36]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens))}, f)


golden()
golden_tied_dynamic()
golden_mistral_bf16()
