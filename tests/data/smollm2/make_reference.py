#!/usr/bin/env python3
"""Independent NumPy forward pass over SmolLM2-135M-Instruct Q4_1 (llama architecture).

Reads and dequantises the GGUF with the `gguf` Python package (gguf.GGUFReader,
gguf.quants.dequantize) -- none of chorus's C++ -- runs the whole prompt as one causal batch
in float64, and writes, next to this script:

  prompt.ids.txt  the prompt's token ids, space-separated, one line
  logits.bin      little-endian: b"CHRL" | u32 n_vocab | u32 n_positions |
                  i32 positions[n_positions] | f32 logits[n_positions][n_vocab]

The prompt is pre-tokenised by hand (the chat template's pieces, split the way the smollm
pre-tokenizer splits them) and each piece is encoded with the GGUF's own byte-level BPE
merges; special tokens are looked up by name.

Usage: make_reference.py [MODEL.gguf]   (default: the path scripts/fetch-models.sh prints)
Needs: pip install gguf numpy
"""
import hashlib
import importlib.metadata
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import gguf

HERE = Path(__file__).resolve().parent
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PIECES = ["<|im_start|>", "user", "\n", "What", " is", " the", " capital", " of", " France", "?",
          "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
SPECIAL = {"<|im_start|>", "<|im_end|>"}


def default_model_path():
    base = os.environ.get("CHORUS_MODELS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "chorus", "models")
    return os.path.join(base, "SmolLM2-135M-Instruct.Q4_1.gguf")


def field(reader, key):
    return reader.fields[key].contents()


# --- tokenizer: GPT-2 byte-level BPE --------------------------------------------------------
def byte_to_unicode():
    """GPT-2's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def bpe_encode(piece, vocab, ranks):
    b2u = byte_to_unicode()
    parts = [b2u[b] for b in piece.encode("utf-8")]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get((parts[i], parts[i + 1]), float("inf")))
        if (parts[best], parts[best + 1]) not in ranks:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return [vocab[p] for p in parts]


def tokenize(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(field(reader, "tokenizer.ggml.merges"))}
    ids = []
    for piece in PIECES:
        ids += [vocab[piece]] if piece in SPECIAL else bpe_encode(piece, vocab, ranks)
    return ids, tokens


# --- forward pass ---------------------------------------------------------------------------
def forward(reader, ids):
    a = "llama."
    n_embd = int(field(reader, a + "embedding_length"))
    n_layer = int(field(reader, a + "block_count"))
    n_head = int(field(reader, a + "attention.head_count"))
    n_head_kv = int(field(reader, a + "attention.head_count_kv"))
    eps = float(field(reader, a + "attention.layer_norm_rms_epsilon"))
    base = float(field(reader, a + "rope.freq_base"))
    hd = n_embd // n_head
    rope_dims = int(field(reader, a + "rope.dimension_count"))
    tensors = {t.name: t for t in reader.tensors}

    def W(name):  # [rows][cols] = [ne1][ne0], float64
        t = tensors[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1, int(t.shape[0]))

    def rms_norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    inv_freq = base ** (-np.arange(0, rope_dims, 2, dtype=np.float64) / rope_dims)  # [rope_dims/2]
    ang = pos[:, None] * inv_freq[None, :]                                          # [T][rope_dims/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # x: [T][heads][hd]; GGUF llama rotates adjacent pairs (2i, 2i+1)
        x = x.copy()
        e, o = x[..., 0:rope_dims:2].copy(), x[..., 1:rope_dims:2].copy()
        x[..., 0:rope_dims:2] = e * cos - o * sin
        x[..., 1:rope_dims:2] = e * sin + o * cos
        return x

    embd = W("token_embd.weight")
    x = embd[ids]  # [T][n_embd]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    group = n_head // n_head_kv
    for l in range(n_layer):
        p = f"blk.{l}."
        h = rms_norm(x, W(p + "attn_norm.weight")[0])
        q = rope((h @ W(p + "attn_q.weight").T).reshape(T, n_head, hd))
        k = rope((h @ W(p + "attn_k.weight").T).reshape(T, n_head_kv, hd))
        v = (h @ W(p + "attn_v.weight").T).reshape(T, n_head_kv, hd)
        k = np.repeat(k, group, axis=1)  # query head j uses KV head j // group
        v = np.repeat(v, group, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", s, v).reshape(T, n_head * hd)
        x = x + attn @ W(p + "attn_output.weight").T
        h = rms_norm(x, W(p + "ffn_norm.weight")[0])
        g = h @ W(p + "ffn_gate.weight").T
        u = h @ W(p + "ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ W(p + "ffn_down.weight").T
    x = rms_norm(x, W("output_norm.weight")[0])
    out = W("output.weight") if "output.weight" in tensors else embd
    return x @ out.T  # [T][n_vocab]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else default_model_path()
    if not os.path.exists(path):
        sys.exit(f"{path} not found: run scripts/fetch-models.sh smollm2")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {SHA256}")
    t0 = time.time()
    reader = gguf.GGUFReader(path)
    ids, vocab = tokenize(reader)
    logits = forward(reader, ids)
    stored = [0, len(ids) // 2, len(ids) - 1]  # positions whose logits are written
    print(f"forward pass over {len(ids)} tokens: {time.time() - t0:.1f} s", file=sys.stderr)
    for p in stored:
        top = np.argsort(-logits[p])[:3]
        print(f"position {p}: top-3 next tokens {[(int(t), vocab[t]) for t in top]}", file=sys.stderr)
    (HERE / "prompt.ids.txt").write_text(" ".join(map(str, ids)) + "\n")
    with open(HERE / "logits.bin", "wb") as f:
        f.write(b"CHRL" + struct.pack("<II", logits.shape[1], len(stored)))
        f.write(np.asarray(stored, dtype="<i4").tobytes())
        f.write(logits[stored].astype("<f4").tobytes())
    print(f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
