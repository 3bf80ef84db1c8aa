#!/usr/bin/env python3
"""Writes independent test vectors for chorus's quant module (engine/quant.cpp).

The reference is the PyPI `gguf` package (gguf-py, maintained with llama.cpp), module
`gguf.quants`; chorus's code was written separately, so agreement is a real check.

    pip install gguf==0.19.0 numpy
    python3 tests/data/quant/make_quant_vectors.py      # rewrites tests/data/quant/*.bin

Vectors were generated with gguf 0.19.0 (numpy 2.4.6); MANIFEST.txt records the versions
actually used and a sha256 per file. Reruns produce byte-identical files (fixed seeds, and
no timestamps are written).

One file per type, `<TYPE>.bin` (e.g. Q4_K.bin), all fields little-endian:

    offset  size            field
    0       4               magic  b"CQV1"
    4       4   u32         ggml type id (GGUF tensor type)
    8       4   u32         n_elems: elements in the row (multiple of the block size)
    12      4   u32         has_input: 1 = `input` present and `raw` is gguf's quantisation
                                       of it; 0 = no `input`, `raw` is random-but-valid
                                       blocks (gguf can only dequantise this type)
    16      4   u32         n_bytes: size of `raw`
    20      4*n_elems f32   input        (only if has_input)
    ..      n_bytes   u8    raw          GGUF block bytes
    ..      4*n_elems f32   dequantised  gguf.quants.dequantize(raw)

Types: chorus's weight_types() (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
Q4_K, Q5_K, Q6_K). Q8_1 and Q8_K are skipped: gguf 0.19.0 can neither quantise nor
dequantise them (and its GGML_QUANT_SIZES lists Q8_1 as 40 bytes, ggml's old float layout,
while ggml's current block_q8_1 is 36 bytes).
"""

from __future__ import annotations

import hashlib
import struct
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants

OUT_DIR = Path(__file__).resolve().parent
MAGIC = b"CQV1"

# Types gguf quantises, with how many elements each vector holds.
QUANTISED = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
# Types gguf only dequantises: random blocks, fp16 scale fields (byte offsets) made sane.
RANDOM_BLOCKS = {
    T.Q2_K: [80, 82],  # d, dmin
    T.Q3_K: [108],     # d
    T.Q4_K: [0, 2],    # d, dmin
    T.Q5_K: [0, 2],    # d, dmin
    T.Q6_K: [208],     # d
}
N_QUANTISED = 1024
N_RANDOM_BLOCKS = 8


def float_edge_cases() -> np.ndarray:
    """fp32 values that exercise fp16/bf16 rounding: ties, subnormals, overflow, inf, nan."""
    bits = [
        0x00000000, 0x80000000,  # +-0
        0x7F800000, 0xFF800000,  # +-inf
        0x7FC00000,              # quiet nan
        0x00000001, 0x80000001,  # fp32 subnormals -> 0 in fp16
        0x7F7FFFFF,              # max fp32 -> inf in fp16, rounds to inf in bf16
        0x3F800000 + 0x1000,     # 1 + 2^-11: fp16 tie -> 1 (even)
        0x3F800000 + 0x3000,     # 1 + 3*2^-11: fp16 tie -> 1 + 2^-9 (even)
        0x3F800000 + 0x1001,     # just above the fp16 tie
        0x3F808000,              # 1 + 2^-8: bf16 tie -> 1
        0x3F818000,              # 1 + 3*2^-8: bf16 tie -> up
        0x477FE000,              # 65504 = max fp16
        0x477FEFFF,              # just below 65520 -> 65504
        0x477FF000,              # 65520 -> inf (tie, rounds to even = inf)
        0x33800000,              # 2^-24 = min fp16 subnormal
        0x33000000,              # 2^-25: tie -> 0
        0x33400000,              # 1.5 * 2^-24 -> tie -> 2^-23
        0x33C00000,              # 3 * 2^-25 = 1.5*2^-24 rounding region
        0x387FC000,              # 2^-14 - 2^-24: largest fp16 subnormal
        0x387FE000,              # tie between largest subnormal and 2^-14 -> 2^-14
        0x38800000,              # 2^-14 = min fp16 normal
    ]
    return np.array(bits, dtype=np.uint32).view(np.float32)


def make_input(qtype: T, rng: np.random.Generator, n: int) -> np.ndarray:
    if qtype in (T.F32, T.F16, T.BF16):
        edge = float_edge_cases()
        # Wide dynamic range so fp16 sees subnormals and overflow.
        rest = rng.standard_normal(n - len(edge)) * np.exp(rng.uniform(-20.0, 12.0, n - len(edge)))
        return np.concatenate([edge, rest.astype(np.float32)]).astype(np.float32)
    block = 32
    x = rng.standard_normal(n).astype(np.float32).reshape(-1, block)
    scale = np.exp(rng.uniform(-3.0, 3.0, (x.shape[0], 1))).astype(np.float32)
    x = x * scale
    x[0] = 0.0                       # all-zero block: d = 0 path
    x[1] *= np.float32(1e-5 / np.abs(x[1]).max())  # tiny: fp16 scale is subnormal
    x[2] = np.float32(0.75)          # constant block: Q4_1/Q5_1 get d = 0
    x[3] = x[3] + np.float32(4.0)    # all-positive block (offset formats)
    x[4, 7] = -np.abs(x[4]).max()    # equal magnitudes of both signs: the abs-max tie
    x[4, 9] = -x[4, 7]               # goes to the first one
    return x.reshape(-1).astype(np.float32)


def random_blocks(qtype: T, rng: np.random.Generator) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (N_RANDOM_BLOCKS, type_size), dtype=np.uint8)
    for off in RANDOM_BLOCKS[qtype]:
        d = (rng.standard_normal(N_RANDOM_BLOCKS) * 0.02).astype(np.float16)
        d[0] = np.float16(3e-6)  # fp16 subnormal scale
        raw[:, off:off + 2] = d.view(np.uint8).reshape(N_RANDOM_BLOCKS, 2)
    return raw.reshape(-1)


def write_vector(qtype: T, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    if qtype in RANDOM_BLOCKS:
        block_size, _ = GGML_QUANT_SIZES[qtype]
        n = N_RANDOM_BLOCKS * block_size
        inp = None
        raw = random_blocks(qtype, rng)
    else:
        n = N_QUANTISED
        inp = make_input(qtype, rng, n)
        raw = np.ascontiguousarray(quants.quantize(inp, qtype)).view(np.uint8).reshape(-1)
    deq = quants.dequantize(raw, qtype).astype(np.float32).reshape(-1)
    assert deq.size == n, (qtype.name, deq.size, n)

    out = bytearray(MAGIC)
    out += struct.pack("<IIII", int(qtype), n, 1 if inp is not None else 0, raw.size)
    if inp is not None:
        out += inp.astype("<f4").tobytes()
    out += raw.tobytes()
    out += deq.astype("<f4").tobytes()
    path = OUT_DIR / f"{qtype.name}.bin"
    path.write_bytes(bytes(out))
    return path


def main() -> int:
    with np.errstate(all="ignore"):  # inf/nan edge cases overflow on purpose
        paths = [write_vector(t, 1000 + int(t)) for t in QUANTISED + list(RANDOM_BLOCKS)]
    lines = [f"gguf {version('gguf')}", f"numpy {np.__version__}"]
    for p in paths:
        lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}")
    (OUT_DIR / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} vector files, {total} bytes, to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
