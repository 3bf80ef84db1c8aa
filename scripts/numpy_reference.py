#!/usr/bin/env python3
"""Independent NumPy fidelity reference: perplexity and logits of a GGUF model in float64.

Reads and dequantises the model with the `gguf` Python package (gguf.GGUFReader,
gguf.quants.dequantize) -- none of chorus's C++ -- and runs each chunk as one causal batch in
float64 (F32 weights as dequantised, K and V rounded through float16 as chorus's F16 KV cache
unless --f32-kv). Architectures: llama (SmolLM2, Mistral-style sliding window), gemma3
(GeGLU, embedding * sqrt(n_embd), QK-norm, post-norms, 5 windowed layers at RoPE base 10000
to each global one, NeoX RoPE), phi3 (fused attn_qkv and gate|up ffn_up, NeoX RoPE), qwen2
(Q/K/V biases, NeoX RoPE) and qwen3moe
(QK-norm, NeoX RoPE, and a mixture of experts in place of the FFN: softmax over the router's
logits, the expert_used_count most probable experts, their probabilities renormalised to sum to 1,
each chosen expert's SwiGLU FFN weighted by them; written from the model's definition, one token
and one expert at a time; llama files with llama.expert_count, Mixtral's layout, run the same).

Two modes:

  perplexity   runs `chorus perplexity` (llama-perplexity's method) with --kl-divergence-base,
               takes the tokens chorus scored from that file (so the tokenizer is not what is
               compared), scores the same positions (second half of each chunk, each chunk's
               first token replaced by BOS when the model adds one) in NumPy and prints chorus's
               PPL, the reference PPL, their relative difference, and per scored token the
               largest |difference| of the target's log-probability (chorus's is stored with
               16-bit resolution, about 2.4e-4).

      numpy_reference.py perplexity --chorus build/tools/chorus -m MODEL.gguf -f TEXT [-c 512] [--chunks 2]

  logits       writes the logits of a list of token ids at some positions in the format
               tests/reference_model.h reads ("CHRL" | u32 n_vocab | u32 n_positions |
               i32 positions[] | f32 logits[n_positions][n_vocab]), plus the ids as text.

      numpy_reference.py logits -m MODEL.gguf --ids "2 818 5279" --out DIR [--positions 0,5]

Needs: pip install gguf numpy
"""
import argparse
import importlib.metadata
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import gguf


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class Model:
    def __init__(self, path, f16_kv=True):
        r = gguf.GGUFReader(path)
        self.reader = r
        self.arch = field(r, "general.architecture")
        if self.arch not in ("llama", "gemma3", "phi3", "qwen2", "qwen3moe"):
            sys.exit(f"{path}: architecture {self.arch}; this reference runs llama, gemma3, phi3, qwen2 and qwen3moe")
        a = self.arch + "."
        self.n_embd = int(field(r, a + "embedding_length"))
        self.n_layer = int(field(r, a + "block_count"))
        self.n_head = int(field(r, a + "attention.head_count"))
        self.n_head_kv = int(field(r, a + "attention.head_count_kv", self.n_head))
        self.hd = int(field(r, a + "attention.key_length", self.n_embd // self.n_head))
        self.eps = float(field(r, a + "attention.layer_norm_rms_epsilon"))
        self.base = float(field(r, a + "rope.freq_base", 10000.0))
        self.rope_dims = int(field(r, a + "rope.dimension_count", self.hd))
        scaling = field(r, a + "rope.scaling.type", "none")
        self.freq_scale = 1.0 / float(field(r, a + "rope.scaling.factor")) if scaling == "linear" else 1.0
        if scaling not in ("none", "linear"):
            sys.exit(f"rope scaling {scaling} is not supported here")
        # phi3's sliding_window metadata is not applied (as llama.cpp does not apply it).
        self.window = 0 if self.arch == "phi3" else int(field(r, a + "attention.sliding_window", 0))
        self.gemma = self.arch == "gemma3"
        self.neox = self.arch in ("gemma3", "phi3", "qwen3moe", "qwen2")
        self.n_expert = int(field(r, a + "expert_count", 0))
        self.n_expert_used = int(field(r, a + "expert_used_count", 0))
        self.bos = int(field(r, "tokenizer.ggml.bos_token_id", -1))
        self.add_bos = bool(field(r, "tokenizer.ggml.add_bos_token", self.arch == "llama"))
        self.f16_kv = f16_kv
        self.tensors = {t.name: t for t in r.tensors}
        self.cache = {}

    def W(self, name, dtype=np.float64):  # [ne1][ne0]
        t = self.tensors[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(dtype).reshape(-1, int(t.shape[0]))

    def vec(self, name):
        return self.W(name)[0]

    def experts(self, name):  # [ne2][ne1][ne0]: one matrix per expert
        t = self.tensors[name]
        ne0, ne1, ne2 = (int(v) for v in t.shape[:3])
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(ne2, ne1, ne0)

    def moe_ffn(self, p, h):
        """The mixture of experts of layer prefix p on normed inputs h [T][n_embd]."""
        logits = h @ self.W(p + "ffn_gate_inp.weight").T  # [T][n_expert]
        gate = self.experts(p + "ffn_gate_exps.weight")    # [n_expert][n_ff][n_embd]
        up = self.experts(p + "ffn_up_exps.weight")
        down = self.experts(p + "ffn_down_exps.weight")    # [n_expert][n_embd][n_ff]
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            z = np.exp(logits[t] - logits[t].max())
            prob = z / z.sum()
            chosen = sorted(range(self.n_expert), key=lambda e: (-prob[e], e))[:self.n_expert_used]
            weight = prob[chosen] / prob[chosen].sum()  # norm_top_k_prob
            for e, w in zip(chosen, weight):
                g, u = gate[e] @ h[t], up[e] @ h[t]
                out[t] += w * (down[e] @ (g / (1.0 + np.exp(-g)) * u))
        return out

    # Layer l's window (0: none), RoPE base and scale.
    def layer_window(self, l):
        if not self.window:
            return 0
        if self.gemma and (l + 1) % 6 == 0:
            return 0
        return self.window

    def layer_rope(self, l):
        if self.gemma and self.layer_window(l):
            return 10000.0, 1.0
        return self.base, self.freq_scale

    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, base, scale):  # x: [T][heads][hd]
        T, d = x.shape[0], self.rope_dims
        inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = (np.arange(T, dtype=np.float64) * scale)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x = x.copy()
        if self.neox:
            i0, i1 = slice(0, d // 2), slice(d // 2, d)
        else:
            i0, i1 = slice(0, d, 2), slice(1, d, 2)
        a, b = x[..., i0].copy(), x[..., i1].copy()
        x[..., i0] = a * cos - b * sin
        x[..., i1] = a * sin + b * cos
        return x

    def hidden(self, ids):
        """Final normed hidden states [T][n_embd] of one sequence from an empty cache."""
        T, hd, H, KV = len(ids), self.hd, self.n_head, self.n_head_kv
        embd = self.embd()
        x = embd[ids].astype(np.float64)
        if self.gemma:
            x = x * float(np.float32(np.sqrt(np.float32(self.n_embd))))
        pos = np.arange(T)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms_norm(x, self.vec(p + "attn_norm.weight"))
            if p + "attn_qkv.weight" in self.tensors:  # phi3: rows Q, then K, then V
                qkv = h @ self.W(p + "attn_qkv.weight").T
                q = qkv[:, :H * hd].reshape(T, H, hd)
                k = qkv[:, H * hd:(H + KV) * hd].reshape(T, KV, hd)
                v = qkv[:, (H + KV) * hd:].reshape(T, KV, hd)
            else:
                q, k, v = (h @ self.W(p + f"attn_{n}.weight").T for n in "qkv")
                if p + "attn_q.bias" in self.tensors:  # qwen2
                    q, k, v = (m + self.vec(p + f"attn_{n}.bias") for m, n in ((q, "q"), (k, "k"), (v, "v")))
                q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
            if p + "attn_q_norm.weight" in self.tensors:
                q = self.rms_norm(q, self.vec(p + "attn_q_norm.weight"))
                k = self.rms_norm(k, self.vec(p + "attn_k_norm.weight"))
            base, scale = self.layer_rope(l)
            q, k = self.rope(q, base, scale), self.rope(k, base, scale)
            if self.f16_kv:
                k = k.astype(np.float16).astype(np.float64)
                v = v.astype(np.float16).astype(np.float64)
            k = np.repeat(k, H // KV, axis=1)
            v = np.repeat(v, H // KV, axis=1)
            allowed = pos[None, :] <= pos[:, None]
            w = self.layer_window(l)
            if w:
                allowed &= pos[None, :] > pos[:, None] - w
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
            s = np.where(allowed[None], s, -np.inf)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v).reshape(T, H * hd) @ self.W(p + "attn_output.weight").T
            if self.gemma:
                o = self.rms_norm(o, self.vec(p + "post_attention_norm.weight"))
            x = x + o
            h = self.rms_norm(x, self.vec(p + "ffn_norm.weight"))
            if p + "ffn_gate_inp.weight" in self.tensors:
                x = x + self.moe_ffn(p, h)
                continue
            if p + "ffn_gate.weight" in self.tensors:
                g = h @ self.W(p + "ffn_gate.weight").T
                u = h @ self.W(p + "ffn_up.weight").T
            else:  # phi3: ffn_up holds the gate rows, then the up rows
                g, u = np.split(h @ self.W(p + "ffn_up.weight").T, 2, axis=1)
            if self.gemma:
                act = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g ** 3)))
            else:
                act = g / (1.0 + np.exp(-g))
            f = (act * u) @ self.W(p + "ffn_down.weight").T
            if self.gemma:
                f = self.rms_norm(f, self.vec(p + "post_ffw_norm.weight"))
            x = x + f
        return self.rms_norm(x, self.vec("output_norm.weight"))

    def embd(self):
        if "embd" not in self.cache:
            self.cache["embd"] = self.W("token_embd.weight", np.float32)
        return self.cache["embd"]

    def head(self):
        if "head" not in self.cache:
            self.cache["head"] = self.W("output.weight", np.float32) if "output.weight" in self.tensors else self.embd()
        return self.cache["head"]

    def logits(self, x, block=32768):
        """x [rows][n_embd] -> logits [rows][n_vocab], float64, the head in row blocks."""
        head = self.head()
        out = np.empty((x.shape[0], head.shape[0]))
        for r0 in range(0, head.shape[0], block):
            out[:, r0:r0 + block] = x @ head[r0:r0 + block].astype(np.float64).T
        return out


def read_base(path):
    """chorus's / llama.cpp's KL-divergence base: (n_ctx, n_vocab, n_chunk, tokens, rows)."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            sys.exit(f"{path}: not a KL-divergence base file")
        n_ctx, n_vocab, n_chunk = struct.unpack("<iii", f.read(12))
        tokens = np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype="<i4").copy()
        nv = 2 * ((n_vocab + 1) // 2) + 4
        rows = np.frombuffer(f.read(), dtype="<u2").reshape(n_chunk, n_ctx - 1 - n_ctx // 2, nv)
    return n_ctx, n_vocab, n_chunk, tokens, rows


def stored_log_prob(row, i):
    scale, min_lp = struct.unpack("<ff", row[:4].tobytes())
    return scale * float(row[4 + i]) + min_lp


def cmd_perplexity(a):
    m = Model(a.model, f16_kv=not a.f32_kv)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.kld")
        cmd = [a.chorus, "perplexity", "-m", a.model, "-f", a.file, "-c", str(a.ctx), "--chunks", str(a.chunks),
               "--kl-divergence-base", base] + a.chorus_args
        print("+ " + " ".join(cmd), file=sys.stderr)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        match = re.search(r"Final estimate: PPL = ([0-9.]+)", out)
        if not match:
            sys.exit("no 'Final estimate' in chorus's output:\n" + out)
        chorus_ppl = float(match.group(1))
        n_ctx, n_vocab, n_chunk, tokens, rows = read_base(base)
    first = n_ctx // 2
    nll, worst = [], 0.0
    t0 = time.time()
    for c in range(n_chunk):
        ids = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if m.add_bos and m.bos >= 0:
            ids[0] = m.bos
        x = m.hidden(ids)[first:n_ctx - 1]
        logits = m.logits(x)
        mx = logits.max(axis=1, keepdims=True)
        lse = (mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True)))[:, 0]
        for r in range(n_ctx - 1 - first):
            target = int(tokens[c * n_ctx + first + r + 1])
            lp = logits[r, target] - lse[r]
            nll.append(-lp)
            if rows[c, r][4 + target] != 0:  # 0: at or below the stored floor (max - 16), not kept
                worst = max(worst, abs(lp - stored_log_prob(rows[c, r], target)))
        print(f"chunk {c + 1}/{n_chunk}: running reference PPL {np.exp(np.mean(nll)):.6f} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)
    ref_ppl = float(np.exp(np.mean(nll)))
    print(f"model {os.path.basename(a.model)}, {n_chunk} chunks of {n_ctx} tokens, {len(nll)} scored tokens, "
          f"KV cache {'f32' if a.f32_kv else 'f16'} in the reference")
    print(f"chorus PPL     {chorus_ppl:.4f}")
    print(f"reference PPL  {ref_ppl:.4f}")
    print(f"relative difference (chorus / reference - 1): {chorus_ppl / ref_ppl - 1:+.5%}")
    print(f"largest |log p(target)| difference: {worst:.2e} (chorus's stored with 16-bit resolution)")
    print(f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}")


def cmd_logits(a):
    m = Model(a.model, f16_kv=not a.f32_kv)
    ids = [int(t) for t in a.ids.split()]
    positions = [int(p) for p in a.positions.split(",")] if a.positions else [0, len(ids) // 2, len(ids) - 1]
    x = m.hidden(np.array(ids))
    logits = m.logits(x[positions])
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "prompt.ids.txt"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    with open(os.path.join(a.out, "logits.bin"), "wb") as f:
        f.write(b"CHRL" + struct.pack("<II", logits.shape[1], len(positions)))
        f.write(np.asarray(positions, dtype="<i4").tobytes())
        f.write(logits.astype("<f4").tobytes())
    tokens = field(m.reader, "tokenizer.ggml.tokens")  # absent from the tests' tiny models
    for k, p in enumerate(positions):
        top = [int(t) for t in np.argsort(-logits[k])[:3]]
        print(f"position {p}: top-3 next tokens {[(t, tokens[t] if tokens else None) for t in top]}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("perplexity")
    p.add_argument("--chorus", default="build/tools/chorus")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-f", "--file", required=True)
    p.add_argument("-c", "--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--f32-kv", action="store_true", help="no f16 rounding of K and V in the reference")
    p.add_argument("chorus_args", nargs="*", help="after --: more chorus options (e.g. -sm tensor -dev 0,0)")
    l = sub.add_parser("logits")
    l.add_argument("-m", "--model", required=True)
    l.add_argument("--ids", required=True)
    l.add_argument("--positions", default="")
    l.add_argument("--out", required=True)
    l.add_argument("--f32-kv", action="store_true")
    a = ap.parse_args()
    (cmd_perplexity if a.cmd == "perplexity" else cmd_logits)(a)


if __name__ == "__main__":
    main()
