#!/usr/bin/env python3
"""Writes tiny Llama-family checkpoints under tests/llm/data/ (config.json,
safetensors weights) with expected.json holding their logits and KV,
computed here in plain Python (float64) following HF transformers'
LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM /
GemmaForCausalLM (v1: embeddings times sqrt(hidden), RMSNorm times (1 + w),
GeGLU with gelu_pytorch_tanh) / Gemma2ForCausalLM (Gemma2DecoderLayer: x +
post_attention_layernorm(attn(input_layernorm(x))), then h +
post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))); scores times
query_pre_attn_scalar ** -0.5, then cap * tanh(s / cap) before the mask
(eager_attention_forward's softcap); logits likewise with
final_logit_softcapping; Gemma2Config's layer_types: sliding on even
layers) / Phi3ForCausalLM (Llama computation, fused
weights written as HF's Phi3Attention and Phi3MLP read them:
self_attn.qkv_proj rows q, then k, then v; mlp.gate_up_proj rows gate, then
up, `gate, up = chunk(2)`, `up * silu(gate)`). Independent of the
C++ code: its own safetensors writer (F32, F16, BF16, shards + index), RoPE
(default, linear, dynamic NTK, llama3 and YaRN scaling, the latter as HF's
_compute_yarn_parameters, with its attention factor on cos and sin), GQA,
RMSNorm, SwiGLU, tied embeddings, Qwen2's q/k/v biases, Qwen3's per-head
q/k RMSNorm (Qwen3Attention: q_norm/k_norm over head_dim before RoPE), and
the sliding-window mask as HF's
masking_utils states it (causal_mask_function: kv_idx <= q_idx, AND
sliding_window_overlay: kv_idx > q_idx - sliding_window), per layer as
MistralConfig (all layers) and Qwen2Config.__post_init__ (layer_types, or
layers >= max_window_layers when use_sliding_window) choose.
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
  golden_qwen2/         qwen2: q/k/v biases, tied embeddings, GQA 4:2,
                        rope_theta 1e6, BF16 weights; use_sliding_window
                        false with a sliding_window of 4 < the 9 tokens (the
                        window must be ignored).
  golden_mistral_window/ mistral, sliding_window 4, 11 tokens: one-shot and
                        in chunks of 3 with the cache; also the logits without
                        a window and with Mistral's one_file_ref boundary
                        (triu(diagonal=-W): W + 1 keys), which must differ.
  golden_qwen2_window/  qwen2, use_sliding_window true, sliding_window 4,
                        max_window_layers 1 of 3 layers (layer 0 full, 1 and
                        2 windowed), 11 tokens, one-shot and chunks of 3.
  golden_gemma/         gemma: MQA (1 KV head), head_dim 8 with 4 heads over
                        hidden 24, tied by default (no key), norms around 0,
                        hidden_activation gelu_pytorch_tanh, BF16 weights.
  golden_gemma2/        gemma2: 3 layers without layer_types (sliding_window 4
                        on layers 0 and 2, layer 1 full), GQA 4:2, head_dim 16
                        (x 4 heads != hidden 32), query_pre_attn_scalar 24,
                        attention soft cap 2, final soft cap 8, tied, F32, 11
                        tokens one-shot and in chunks of 3; also the logits
                        without a window, with W + 1 keys, without either soft
                        cap, without the sandwich norms (post-attention norm
                        where Gemma v1 has it, no feedforward norms) and with
                        scores scaled by head_dim ** -0.5, which must differ.
  golden_gemma3/        gemma3_text: 4 layers, sliding_window_pattern 3 (layers
                        0, 1, 3 sliding with window 4, layer 2 full), q/k norms
                        (1 + w) with weights around 0, sliding layers rotating
                        with rope_local_base_freq 100 (default RoPE), the full
                        one with rope_theta 10000 and linear factor 4,
                        query_pre_attn_scalar 24, no soft caps, tied, F32, 11
                        tokens one-shot and in chunks of 3; also the logits
                        with the global RoPE on every layer, with q/k norms
                        times w (not 1 + w) and without q/k norms.
  golden_qwen3/         qwen3: q_norm/k_norm weights around 1 (not 1), GQA 4:2,
                        head_dim 16 (x 4 heads != hidden 32), untied, F32;
                        also the logits without the q/k norms and with them
                        applied after RoPE, which must differ.
  golden_yarn/          llama with YaRN RoPE (factor 4 = 256 / 64 positions,
                        theta 100: the ramp spans pairs 0..5 of 8), F32, 12
                        tokens; also the logits without the attention factor.
  golden_phi3/          phi3: fused qkv_proj [(4 + 2 * 2) * 8, 32] and
                        gate_up_proj [2 * 48, 32], GQA 4:2, sliding_window 5
                        on both layers (Phi3Model masks as MistralModel), 11
                        tokens one-shot and in chunks of 3, F32; also the
                        logits without the window and with W + 1 keys.
  golden_phi3_partial/  phi3 with partial_rotary_factor 0.75 (as Phi-4-mini):
                        int(8 * 0.75) = 6 of 8 head dims rotate (rotate_half
                        within them: pairs (0,3), (1,4), (2,5)), dims 6-7
                        pass; tied, GQA 4:2, no window, F32; also the logits
                        of the whole head rotated, which must differ.
  golden_phi3_longrope/ phi3 with LongRoPE (rope_scaling type "su", the name
                        Phi3Config renames to longrope): 64 / 16 positions,
                        attention factor sqrt(1 + ln 4 / ln 16); 20 tokens
                        one-shot (long factors) and in chunks of 12 + 8 (short
                        factors for the first call, long for the second, the
                        cached keys keeping theirs); also the logits with the
                        short factors throughout and without the attention
                        factor, which differ.
  yarn_rope.json        YaRN inverse frequencies and attention factors of
                        five rope_scaling dicts (truncate false, betas,
                        mscale/mscale_all_dim, attention_factor, old "type",
                        factor from the positions' ratio).
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
        # Phi3's partial RoPE: rotate int(head_dim * partial_rotary_factor) dims (HF's int()).
        self.RD = int(self.HD * cfg.get("partial_rotary_factor", 1.0))
        rp = cfg.get("rope_parameters") or {}
        self.theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
        self.rope = dict(cfg.get("rope_scaling") or rp)
        self.rope_type = self.rope.get("rope_type", self.rope.get("type", "default"))
        self.dtype = dtype
        self.windows = layer_windows(cfg, self.L)
        qkv_bias = cfg["model_type"] == "qwen2"  # Qwen2Attention: bias=True on q/k/v, not o
        # Qwen3Attention (and Gemma3Attention, whose norms scale by 1 + w): q_norm, k_norm [head_dim].
        self.qk_norm = cfg["model_type"] in ("qwen3", "gemma3_text")
        self.gemma = cfg["model_type"] in ("gemma", "gemma2", "gemma3_text")
        # Gemma2DecoderLayer's four norms, scaling, soft caps (Gemma3DecoderLayer's too).
        self.gemma2 = cfg["model_type"] in ("gemma2", "gemma3_text")
        self.gemma3 = cfg["model_type"] == "gemma3_text"
        if self.gemma3:  # Gemma3TextConfig: rope_theta 1e6 for full layers, rope_local_base_freq for sliding ones
            self.theta = cfg.get("rope_theta", 1000000.0)
            self.local_base = cfg.get("rope_local_base_freq", 10000.0)
        self.fused = cfg["model_type"] == "phi3"  # qkv_proj / gate_up_proj in the file
        # GemmaRMSNorm scales by (1 + w), its weights sit around 0.
        norm = (lambda n: [f32(0.5 * rnd()) for _ in range(n)]) if self.gemma else vec
        state[0] = seed
        V, H, I, NH, KVH, HD = self.V, self.H, self.I, self.NH, self.KVH, self.HD
        W = {"model.embed_tokens.weight": mat(V, H, 1.0)}
        for i in range(self.L):
            p = f"model.layers.{i}."
            W[p + "self_attn.q_proj.weight"] = mat(NH * HD, H, 0.3)
            W[p + "self_attn.k_proj.weight"] = mat(KVH * HD, H, 0.3)
            W[p + "self_attn.v_proj.weight"] = mat(KVH * HD, H, 0.3)
            if qkv_bias:
                W[p + "self_attn.q_proj.bias"] = mat(1, NH * HD, 0.5)
                W[p + "self_attn.k_proj.bias"] = mat(1, KVH * HD, 0.5)
                W[p + "self_attn.v_proj.bias"] = mat(1, KVH * HD, 0.5)
            W[p + "self_attn.o_proj.weight"] = mat(H, NH * HD, 0.3)
            if self.qk_norm:
                W[p + "self_attn.q_norm.weight"] = [norm(HD)]
                W[p + "self_attn.k_norm.weight"] = [norm(HD)]
            W[p + "mlp.gate_proj.weight"] = mat(I, H, 0.3)
            W[p + "mlp.up_proj.weight"] = mat(I, H, 0.3)
            W[p + "mlp.down_proj.weight"] = mat(H, I, 0.3)
            W[p + "input_layernorm.weight"] = [norm(H)]
            W[p + "post_attention_layernorm.weight"] = [norm(H)]
            if self.gemma2:
                W[p + "pre_feedforward_layernorm.weight"] = [norm(H)]
                W[p + "post_feedforward_layernorm.weight"] = [norm(H)]
        W["model.norm.weight"] = [norm(H)]
        if not tie:
            W["lm_head.weight"] = mat(V, H, 0.5)
        self.W = {k: [[round_to(x, dtype) for x in row] for row in m] for k, m in W.items()}
        self.head = self.W["model.embed_tokens.weight"] if tie else self.W["lm_head.weight"]

    def tensors(self):
        out = []
        for name, m in self.W.items():
            if self.fused:  # Phi3Attention: qkv[..., :q], then k, then v; Phi3MLP: gate, up = chunk(2)
                if name.endswith("self_attn.q_proj.weight"):
                    p = name[:-len("q_proj.weight")]
                    m, name = m + self.W[p + "k_proj.weight"] + self.W[p + "v_proj.weight"], p + "qkv_proj.weight"
                elif name.endswith("mlp.gate_proj.weight"):
                    p = name[:-len("gate_proj.weight")]
                    m, name = m + self.W[p + "up_proj.weight"], p + "gate_up_proj.weight"
                elif name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")):
                    continue
            shape = [len(m[0])] if name.endswith("norm.weight") or name.endswith(".bias") else [len(m), len(m[0])]
            out.append((name, self.dtype, shape, [x for row in m for x in row]))
        return out

    def inv_freq(self, seq_len):
        """RoPE inverse frequencies for a forward call whose last position is seq_len - 1."""
        base, dim, s, t = self.theta, self.RD, self.rope, self.rope_type
        if t == "dynamic" and seq_len > self.cfg["max_position_embeddings"]:
            m = self.cfg["max_position_embeddings"]
            base = base * ((s["factor"] * seq_len / m) - (s["factor"] - 1)) ** (dim / (dim - 2))
        inv = [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]
        if self.fused and t in ("longrope", "su", "yarn"):  # Phi3Config reads su/yarn as longrope
            orig, _ = self.longrope()
            ext = s["long_factor"] if seq_len > orig else s["short_factor"]
            return [1.0 / (e * base ** (2 * i / dim)) for i, e in enumerate(ext)]
        if t == "linear":
            return [f / s["factor"] for f in inv]
        if t == "yarn":
            return yarn(self.theta, dim, self.cfg["max_position_embeddings"], s)[0]
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

    def local_inv_freq(self):
        """Gemma3's sliding layers: default RoPE with base rope_local_base_freq."""
        return [1.0 / self.local_base ** (2 * i / self.RD) for i in range(self.RD // 2)]

    def longrope(self):
        """(original positions, attention factor) as HF's _compute_longrope_parameters
        (factor = max / original positions; sqrt(1 + ln(factor) / ln(original)) unless given)."""
        s = self.rope
        orig = s.get("original_max_position_embeddings") or self.cfg.get("original_max_position_embeddings", 4096)
        factor = self.cfg["max_position_embeddings"] / orig
        att = s.get("attention_factor") or (1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig)))
        return orig, att

    def attention_scaling(self):
        if self.fused and self.rope_type in ("longrope", "su", "yarn"):
            return self.longrope()[1]
        return yarn(self.theta, self.HD, self.cfg["max_position_embeddings"], self.rope)[1] \
            if self.rope_type == "yarn" else 1.0

    def forward(self, tokens, chunks, windows=None, extra_key=0, qk_norm="before", att=None, gemma2=None,
                gemma3=None):
        """Logits of all tokens, run as consecutive forward calls of `chunks` tokens
        each with a growing KV cache; returns (logits, last layer keys, values).
        `windows` overrides the per-layer windows (0: full attention);
        extra_key = 1 lets a windowed query also see key q - W (the
        one_file_ref boundary), to show that the data tell the two apart.
        qk_norm ("before", "after" RoPE or "none") and att (the factor on cos
        and sin; None: the config's) also make wrong variants for qwen3/yarn;
        gemma2 (a dict) overrides gemma2's "attn_cap", "final_cap" (0: none),
        "sandwich" (False: v1's layer) and "scaling" for its wrong variants;
        gemma3 (a dict): "global_rope" (sliding layers too rotate with rope_theta
        and rope_scaling), "plain_qk_norm" (q/k norms times w, not 1 + w)."""
        windows = self.windows if windows is None else windows
        NH, KVH, HD, L, eps = self.NH, self.KVH, self.HD, self.L, self.cfg["rms_norm_eps"]
        W = self.W

        def linear(x, w, b=None):  # x [n][in], w [out][in], b [1][out] or None
            y = [[sum(a * c for a, c in zip(row, wr)) for wr in w] for row in x]
            return y if b is None else [[v + bb for v, bb in zip(row, b[0])] for row in y]

        gemma = self.gemma

        def rms(x, w):
            out = []
            for row in x:
                r = 1.0 / math.sqrt(sum(v * v for v in row) / len(row) + eps)
                out.append([v * r * ((1.0 + g) if gemma else g) for v, g in zip(row, w[0])])
            return out

        def act(g):  # SiLU, or Gemma's gelu_pytorch_tanh
            if gemma:
                return 0.5 * g * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
            return g / (1 + math.exp(-g))

        scaling = self.attention_scaling() if att is None else att
        g2 = {"attn_cap": 0.0, "final_cap": 0.0, "sandwich": False, "scaling": None}  # None: / sqrt(HD)
        if self.gemma2:  # Gemma2Config: caps 50 and 30 unless given, null caps are no caps; Gemma3's default none
            attn_cap, final_cap = (None, None) if self.gemma3 else (50.0, 30.0)
            g2 = {"attn_cap": self.cfg.get("attn_logit_softcapping", attn_cap) or 0.0,
                  "final_cap": self.cfg.get("final_logit_softcapping", final_cap) or 0.0, "sandwich": True,
                  "scaling": self.cfg.get("query_pre_attn_scalar", 256) ** -0.5}
        g2.update(gemma2 or {})
        g3 = {"global_rope": False, "plain_qk_norm": False}
        g3.update(gemma3 or {})

        def qk_rms(x, w):  # Gemma3RMSNorm (1 + w), or qwen3's / the plain variant's w
            if not self.gemma3 or g3["plain_qk_norm"]:
                r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
                return [v * r * g for v, g in zip(x, w[0])]
            return rms([x], w)[0]

        def cap(s, c):  # Gemma2's soft cap: c * tanh(s / c); c 0: none
            return c * math.tanh(s / c) if c else s

        def rope(v, pos, inv, sc=None):  # HD values of one head at position pos (rotate_half over the first RD)
            sc = scaling if sc is None else sc
            half = self.RD // 2
            out = list(v)  # dims past RD pass unrotated (phi3's partial RoPE)
            for i in range(half):
                c, s = math.cos(pos * inv[i]) * sc, math.sin(pos * inv[i]) * sc
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
            if gemma:  # GemmaModel: times sqrt(hidden_size) as a tensor of the model's dtype (float32 here)
                x = [[v * f32(math.sqrt(self.H)) for v in row] for row in x]
            for l in range(L):
                p = f"model.layers.{l}."
                # Gemma3: sliding layers rotate with rotary_emb_local (rope_local_base_freq, default RoPE, factor 1).
                local = self.gemma3 and self.windows[l] > 0 and not g3["global_rope"]
                inv_l, sc_l = (self.local_inv_freq(), 1.0) if local else (inv, scaling)
                h = rms(x, W[p + "input_layernorm.weight"])
                q, k, v = (linear(h, W[p + f"self_attn.{m}_proj.weight"], W.get(p + f"self_attn.{m}_proj.bias"))
                           for m in "qkv")
                # Qwen3: RMSNorm of each head over head_dim (weights q_norm/k_norm), before RoPE.
                mode = qk_norm if self.qk_norm else "none"
                qn = (lambda v: qk_rms(v, W[p + "self_attn.q_norm.weight"])) if mode != "none" else (lambda v: v)
                kn = (lambda v: qk_rms(v, W[p + "self_attn.k_norm.weight"])) if mode != "none" else (lambda v: v)
                if mode == "after":
                    qh = [[qn(rope(q[t][a * HD:(a + 1) * HD], begin + t, inv_l, sc_l)) for a in range(NH)]
                          for t in range(n)]
                    cache_k[l] += [[kn(rope(k[t][a * HD:(a + 1) * HD], begin + t, inv_l, sc_l)) for a in range(KVH)]
                                   for t in range(n)]
                else:
                    qh = [[rope(qn(q[t][a * HD:(a + 1) * HD]), begin + t, inv_l, sc_l) for a in range(NH)]
                          for t in range(n)]
                    cache_k[l] += [[rope(kn(k[t][a * HD:(a + 1) * HD]), begin + t, inv_l, sc_l) for a in range(KVH)]
                                   for t in range(n)]
                cache_v[l] += [[v[t][a * HD:(a + 1) * HD] for a in range(KVH)] for t in range(n)]
                kh, vh = cache_k[l], cache_v[l]
                att = [[0.0] * (NH * HD) for _ in range(n)]
                for a in range(NH):
                    g = a // (NH // KVH)  # repeat_kv: query head a uses kv head a // group
                    for t in range(n):
                        qi, win = begin + t, windows[l]
                        # HF masking_utils: causal (kv <= q) AND, with a window, kv > q - window.
                        seen = [j for j in range(len(kh))
                                if j <= qi and (win == 0 or j > qi - win - extra_key)]
                        dots = [sum(qq * kk for qq, kk in zip(qh[t][a], kh[j][g])) for j in seen]
                        sc = [cap(d / math.sqrt(HD) if g2["scaling"] is None else d * g2["scaling"], g2["attn_cap"])
                              for d in dots]
                        m = max(sc)
                        e = [math.exp(s - m) for s in sc]
                        z = sum(e)
                        for d in range(HD):
                            att[t][a * HD + d] = sum(e[i] / z * vh[j][g][d] for i, j in enumerate(seen))
                o = linear(att, W[p + "self_attn.o_proj.weight"])
                if g2["sandwich"]:  # Gemma2: the attention's output is normed before the residual
                    o = rms(o, W[p + "post_attention_layernorm.weight"])
                x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, o)]
                h = rms(x, W[p + ("pre_feedforward_layernorm.weight" if g2["sandwich"]
                                  else "post_attention_layernorm.weight")])
                gt, up = linear(h, W[p + "mlp.gate_proj.weight"]), linear(h, W[p + "mlp.up_proj.weight"])
                a = [[act(gg) * uu for gg, uu in zip(r1, r2)] for r1, r2 in zip(gt, up)]
                d = linear(a, W[p + "mlp.down_proj.weight"])
                if g2["sandwich"]:  # and the MLP's output too
                    d = rms(d, W[p + "post_feedforward_layernorm.weight"])
                x = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(x, d)]
            logits += [[cap(v, g2["final_cap"]) for v in row]
                       for row in linear(rms(x, W["model.norm.weight"]), self.head)]
            begin += n
        T = len(cache_k[-1])
        last_k = [[cache_k[-1][t][a] for t in range(T)] for a in range(KVH)]
        last_v = [[cache_v[-1][t][a] for t in range(T)] for a in range(KVH)]
        return logits, last_k, last_v


def yarn(theta, dim, max_pos, s):
    """(inv_freq, attention_factor) as HF's _compute_yarn_parameters (current
    version: `factor` as given, max_pos / original_max_position_embeddings
    only when it is absent), in float64."""
    orig = s.get("original_max_position_embeddings") or max_pos
    factor = s.get("factor")
    if factor is None:
        factor = max_pos / orig

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = s.get("attention_factor")
    if att is None:
        if s.get("mscale") and s.get("mscale_all_dim"):
            att = get_mscale(factor, s["mscale"]) / get_mscale(factor, s["mscale_all_dim"])
        else:
            att = get_mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(rot):  # the pair index at which a wave turns `rot` times over orig positions
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    inv = []
    for i in range(dim // 2):
        pos_freq = theta ** (2 * i / dim)
        extra = 1 - min(max((i - low) / (high - low), 0.0), 1.0)  # weight of the unscaled frequency
        inv.append(1 / (factor * pos_freq) * (1 - extra) + 1 / pos_freq * extra)
    return inv, att


def layer_windows(cfg, L):
    """Per-layer sliding window (0: full attention), as HF's configs decide it."""
    if cfg["model_type"] in ("mistral", "phi3"):  # MistralModel (Phi3Model's base): sliding_window on every layer
        return [cfg.get("sliding_window") or 0] * L
    if cfg["model_type"] in ("qwen2", "qwen3"):
        # Qwen2Config.__post_init__ (Qwen3Config's is the same): sliding_window = sliding_window if use_sliding_window else None;
        # layer_types default to sliding_attention for i >= max_window_layers when a window is set.
        sw = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window", False) else None
        types = cfg.get("layer_types") or [
            "sliding_attention" if sw is not None and i >= cfg.get("max_window_layers", 28) else "full_attention"
            for i in range(L)]
        return [sw if t == "sliding_attention" else 0 for t in types]
    if cfg["model_type"] in ("gemma2", "gemma3_text"):
        # Gemma2Config: sliding_window 4096 by default; layer_types default to
        # sliding_attention where bool((i + 1) % 2), i.e. on even layers;
        # Gemma3TextConfig: where bool((i + 1) % sliding_window_pattern) (default 6).
        sw = cfg.get("sliding_window", 4096)
        pattern = 2 if cfg["model_type"] == "gemma2" else cfg.get("sliding_window_pattern", 6)
        types = cfg.get("layer_types") or [
            "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(L)]
        return [sw if t == "sliding_attention" else 0 for t in types]
    return [0] * L


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


def golden_qwen2():
    out = os.path.join(HERE, "golden_qwen2")
    cfg = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "use_sliding_window": False, "sliding_window": 4, "max_window_layers": 1,
        "attention_dropout": 0.0, "bos_token_id": 39, "eos_token_id": 39,
    }
    c = Case(cfg, 2024, "BF16", tie=True)
    assert c.windows == [0, 0]
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [7, 33, 1, 20, 20, 5, 38, 12, 0]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens))}, f)


def windowed(out, cfg, seed, windows, tie=False, variants=None, extra=None):
    """A windowed case: one-shot and chunked prefill, plus the logits without
    any window and with the off-by-one boundary (W + 1 keys), and those of
    `variants` (name -> forward() keyword arguments)."""
    out = os.path.join(HERE, out)
    c = Case(cfg, seed, "F32", tie=tie)
    assert c.windows == windows, c.windows
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [9, 2, 27, 14, 14, 30, 6, 19, 1, 23, 11]  # 11 > window 4
    chunks = [3, 3, 3, 2]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    ch_logits, ch_k, ch_v = c.forward(tokens, chunks)
    full, _, _ = c.forward(tokens, [len(tokens)], windows=[0] * c.L)
    wide, _, _ = c.forward(tokens, [len(tokens)], extra_key=1)
    data = {"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
            "inv_freq": c.inv_freq(len(tokens)), "layer_windows": c.windows, "chunks": chunks,
            "chunked_logits": ch_logits, "chunked_last_layer_keys": ch_k,
            "chunked_last_layer_values": ch_v, "full_attention_logits": full,
            "window_plus_one_logits": wide}
    for name, kwargs in (variants or {}).items():
        data[name] = c.forward(tokens, [len(tokens)], **kwargs)[0]
    data.update(extra(c, tokens) if extra else {})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(data, f)


def golden_mistral_window():
    cfg = {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4, "tie_word_embeddings": False,
        "torch_dtype": "float32", "hidden_act": "silu",
    }
    windowed("golden_mistral_window", cfg, 99, [4, 4])


def golden_qwen2_window():
    cfg = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 1, "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
        "hidden_act": "silu", "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1,
    }
    windowed("golden_qwen2_window", cfg, 31337, [0, 4, 4])


def golden_gemma():
    out = os.path.join(HERE, "golden_gemma")
    cfg = {
        "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
        "vocab_size": 48, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "torch_dtype": "bfloat16", "hidden_act": "gelu",
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }
    c = Case(cfg, 8086, "BF16", tie=True)
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [2, 41, 7, 7, 30, 12, 0, 47, 19, 5]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens))}, f)


def golden_gemma2():
    cfg = {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "torch_dtype": "float32", "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "attention_dropout": 0.0,
        "query_pre_attn_scalar": 24, "sliding_window": 4, "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 8.0, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }
    windowed("golden_gemma2", cfg, 2024, [4, 0, 4], tie=True, variants={
        "no_attn_softcap_logits": {"gemma2": {"attn_cap": 0.0}},
        "no_final_softcap_logits": {"gemma2": {"final_cap": 0.0}},
        "no_sandwich_norms_logits": {"gemma2": {"sandwich": False}},
        "head_dim_scaling_logits": {"gemma2": {"scaling": 16 ** -0.5}},
    })


def golden_gemma3():
    cfg = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_local_base_freq": 100.0,
        "rope_scaling": {"rope_type": "linear", "factor": 4.0}, "torch_dtype": "float32",
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "attention_dropout": 0.0,
        "query_pre_attn_scalar": 24, "sliding_window": 4, "sliding_window_pattern": 3,
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }
    windowed("golden_gemma3", cfg, 3033, [4, 4, 0, 4], tie=True, variants={
        "global_rope_logits": {"gemma3": {"global_rope": True}},
        "plain_qk_norm_logits": {"gemma3": {"plain_qk_norm": True}},
        "no_qk_norm_logits": {"qk_norm": "none"},
    }, extra=lambda c, tokens: {"local_inv_freq": c.local_inv_freq()})


def golden_qwen3():
    out = os.path.join(HERE, "golden_qwen3")
    cfg = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 1000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
        "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": 28, "bos_token_id": 39, "eos_token_id": 38,
    }
    c = Case(cfg, 3003, "F32", tie=False)
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [4, 37, 11, 0, 25, 25, 8, 19, 33, 2]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    no_norm, _, _ = c.forward(tokens, [len(tokens)], qk_norm="none")
    after, _, _ = c.forward(tokens, [len(tokens)], qk_norm="after")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens)), "no_qk_norm_logits": no_norm,
                   "qk_norm_after_rope_logits": after}, f)


def golden_yarn():
    out = os.path.join(HERE, "golden_yarn")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 32, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 100.0, "tie_word_embeddings": False, "torch_dtype": "float32",
        "hidden_act": "silu",
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    }
    c = Case(cfg, 5150, "F32", tie=False)
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [1, 30, 7, 7, 22, 15, 0, 9, 28, 3, 17, 12]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    plain, _, _ = c.forward(tokens, [len(tokens)], att=1.0)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens)), "attention_scaling": c.attention_scaling(),
                   "no_attention_factor_logits": plain}, f)


def golden_phi3():
    cfg = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "original_max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "sliding_window": 5, "tie_word_embeddings": False, "torch_dtype": "float32", "hidden_act": "silu",
        "attention_bias": False, "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
        "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 32, "pad_token_id": 32, "use_cache": True,
    }
    windowed("golden_phi3", cfg, 2718, [5, 5])


def golden_phi3_partial():
    out = os.path.join(HERE, "golden_phi3_partial")
    cfg = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "original_max_position_embeddings": 64, "partial_rotary_factor": 0.75, "rms_norm_eps": 1e-5,
        "rope_theta": 100.0, "rope_scaling": None, "sliding_window": None, "tie_word_embeddings": True,
        "torch_dtype": "float32", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    }
    c = Case(cfg, 1618, "F32", tie=True)
    assert c.RD == 6
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [1, 33, 5, 5, 21, 14, 0, 38, 9, 27]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    inv = c.inv_freq(len(tokens))
    c.RD = c.HD
    whole, _, _ = c.forward(tokens, [len(tokens)])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": inv, "whole_head_rope_logits": whole}, f)


def golden_phi3_longrope():
    out = os.path.join(HERE, "golden_phi3_longrope")
    cfg = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "original_max_position_embeddings": 16, "rms_norm_eps": 1e-5, "rope_theta": 100.0,
        "rope_scaling": {"type": "su", "short_factor": [1.0, 1.3, 2.1, 3.7], "long_factor": [1.1, 2.5, 6.0, 11.0]},
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32", "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2,
    }
    c = Case(cfg, 4242, "F32", tie=False)
    write_cfg(out, cfg)
    write_safetensors(os.path.join(out, "model.safetensors"), c.tensors())
    tokens = [1, 35, 8, 8, 19, 26, 3, 0, 39, 14, 22, 7, 30, 11, 11, 5, 28, 17, 2, 33]
    chunks = [12, 8]
    logits, last_k, last_v = c.forward(tokens, [len(tokens)])
    ch_logits, ch_k, ch_v = c.forward(tokens, chunks)
    plain, _, _ = c.forward(tokens, [len(tokens)], att=1.0)
    long_f = c.rope["long_factor"]
    c.rope["long_factor"] = c.rope["short_factor"]
    short, _, _ = c.forward(tokens, [len(tokens)])
    c.rope["long_factor"] = long_f
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tokens": tokens, "logits": logits, "last_layer_keys": last_k, "last_layer_values": last_v,
                   "inv_freq": c.inv_freq(len(tokens)), "short_inv_freq": c.inv_freq(16),
                   "attention_scaling": c.attention_scaling(), "chunks": chunks, "chunked_logits": ch_logits,
                   "chunked_last_layer_keys": ch_k, "chunked_last_layer_values": ch_v,
                   "no_attention_factor_logits": plain, "short_factor_logits": short}, f)


def yarn_rope():
    """YaRN frequencies for rope_test.cpp: each case's config keys and HF's numbers."""
    cases = [
        {"head_dim": 16, "rope_theta": 100.0, "max_position_embeddings": 256,
         "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
        {"head_dim": 32, "rope_theta": 10000.0, "max_position_embeddings": 1024,
         "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                          "beta_fast": 16, "beta_slow": 2, "truncate": False}},
        {"head_dim": 64, "rope_theta": 10000.0, "max_position_embeddings": 163840,
         "rope_scaling": {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                          "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}},
        {"head_dim": 16, "rope_theta": 500.0, "max_position_embeddings": 128,
         "rope_scaling": {"type": "yarn", "factor": 2.0, "attention_factor": 1.5}},
        {"head_dim": 32, "rope_theta": 1000000.0, "max_position_embeddings": 131072,
         "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 32768}},
    ]
    for c in cases:
        c["inv_freq"], c["attention_scaling"] = yarn(c["rope_theta"], c["head_dim"], c["max_position_embeddings"],
                                                     c["rope_scaling"])
    with open(os.path.join(HERE, "yarn_rope.json"), "w") as f:
        json.dump(cases, f, indent=1)


golden()
golden_tied_dynamic()
golden_mistral_bf16()
golden_qwen2()
golden_mistral_window()
golden_qwen2_window()
golden_gemma()
golden_gemma2()
golden_gemma3()
golden_qwen3()
golden_yarn()
golden_phi3()
golden_phi3_partial()
golden_phi3_longrope()
yarn_rope()
