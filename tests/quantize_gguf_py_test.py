#!/usr/bin/env python3
"""`chorus quantize` output read by the `gguf` Python package (gguf-py, from PyPI).

usage: quantize_gguf_py_test.py CHORUS_BINARY MODELS_DIR WORK_DIR

For stories260K (F32) and llama-2-tiny-random (F16) in MODELS_DIR, quantised by chorus to the
plain formats, gguf.GGUFReader must read OUT with: the same metadata as IN apart from
general.file_type (llama.cpp's number for the type) and general.quantization_version (2); the
same tensors and shapes; the types llama.cpp's rules give (restated here independently for the
plain formats); and for every tensor of a format gguf-py can quantise (Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1, BF16) values equal to gguf.quants.quantize -> dequantize of the input (the bytes are
compared too and must be identical); F16 tensors equal numpy's float16 rounding. Then a model
written here by gguf.GGUFWriter with 256-wide rows is quantised to Q4_K_M and Q6_K, and gguf-py
must read and dequantise every K-quant tensor to within the format's usual error.
Exits non-zero with a message on the first failure; a missing package or model is a failure.
"""
import os
import subprocess
import sys


def fail(msg):
    print("quantize_gguf_py_test: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


try:
    import numpy as np
    import gguf
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as T
except ImportError as e:
    fail("%s: this test needs the gguf and numpy packages from PyPI; scripts/install-deps.sh installs them "
         "(python3 -m pip install 'gguf==0.19.0' numpy)" % e)

FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "BF16": 32,
             "Q4_K_M": 15, "Q6_K": 18}
GGUF_PY_QUANTISES = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16}
SET_BY_QUANTIZE = {"general.file_type", "general.quantization_version"}


def block(t):
    return gguf.GGML_QUANT_SIZES[t][0]


def expected_type(name, n_dims, ne0, in_type, target):
    """llama.cpp's choice for a plain target (no mix), restated from its rules."""
    if not (name.endswith("weight") and n_dims >= 2 and "_norm.weight" not in name):
        return in_type
    if target in (T.F32, T.F16, T.BF16):
        return target
    t = target
    if name == "output.weight":
        t = T.Q8_0 if ne0 % block(target) else (T.Q8_0 if target == T.Q8_0 else T.Q6_K)
    if ne0 % block(t):
        t = T.Q8_0 if t == T.Q6_K else T.F16
        if ne0 % block(t):
            t = T.F16
    return t


def quantize(chorus, src, dst, type_name):
    r = subprocess.run([chorus, "quantize", src, dst, type_name], capture_output=True, text=True)
    if r.returncode != 0:
        fail("chorus quantize %s %s %s exited %d:\n%s" % (src, dst, type_name, r.returncode, r.stderr))


def as_f32(t):
    """The tensor's values as float32 rows [n_rows, ne0]."""
    x = quants.dequantize(t.data, t.tensor_type) if t.tensor_type != T.F32 else np.asarray(t.data)
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, int(t.shape[0]))


def field_bytes(f):
    return [bytes(np.asarray(p).tobytes()) for p in f.parts]


def check_metadata(r_in, r_out, where, type_name):
    keys_in = [k for k in r_in.fields if k not in SET_BY_QUANTIZE and not k.startswith("GGUF.")]
    keys_out = [k for k in r_out.fields if k not in SET_BY_QUANTIZE and not k.startswith("GGUF.")]
    if keys_in != keys_out:
        fail("%s: metadata keys differ: %s" % (where, sorted(set(keys_in) ^ set(keys_out))))
    for k in keys_in:
        if field_bytes(r_in.fields[k]) != field_bytes(r_out.fields[k]):
            fail("%s: metadata value of %s differs" % (where, k))
    ft = r_out.fields["general.file_type"].parts[-1][0]
    if int(ft) != FILE_TYPE[type_name]:
        fail("%s: general.file_type %d, expected %d" % (where, ft, FILE_TYPE[type_name]))
    qv = r_out.fields["general.quantization_version"].parts[-1][0]
    if int(qv) != 2:
        fail("%s: general.quantization_version %d, expected 2" % (where, qv))


def check_plain(chorus, model, work, type_name):
    out = os.path.join(work, "%s.%s.gguf" % (os.path.basename(model), type_name))
    quantize(chorus, model, out, type_name)
    where = "%s -> %s" % (os.path.basename(model), type_name)
    r_in, r_out = gguf.GGUFReader(model), gguf.GGUFReader(out)
    check_metadata(r_in, r_out, where, type_name)
    if [t.name for t in r_in.tensors] != [t.name for t in r_out.tensors]:
        fail("%s: tensor names or order differ" % where)
    target = T[type_name]
    compared = {}
    for a, b in zip(r_in.tensors, r_out.tensors):
        what = "%s: %s" % (where, a.name)
        if list(a.shape) != list(b.shape):
            fail("%s: shape %s, expected %s" % (what, list(b.shape), list(a.shape)))
        want = expected_type(a.name, len(a.shape), int(a.shape[0]), a.tensor_type, target)
        if b.tensor_type != want:
            fail("%s: type %s, expected %s" % (what, b.tensor_type.name, want.name))
        if b.tensor_type == a.tensor_type:
            if bytes(a.data.tobytes()) != bytes(b.data.tobytes()):
                fail("%s: copied tensor's bytes differ" % what)
            continue
        x = as_f32(a)
        got = as_f32(b)
        if b.tensor_type in GGUF_PY_QUANTISES:
            ref = quants.quantize(x, b.tensor_type)
            ref_values = quants.dequantize(ref, b.tensor_type).reshape(got.shape)
            if not np.array_equal(got, ref_values):
                i = np.argwhere(got != ref_values)[0]
                fail("%s: value at %s is %r, gguf-py's round trip gives %r" % (what, tuple(i), got[tuple(i)],
                                                                             ref_values[tuple(i)]))
            if ref.tobytes() != bytes(b.data.tobytes()):
                fail("%s: values equal gguf-py's but the bytes differ" % what)
        elif b.tensor_type == T.F16:
            if not np.array_equal(got, x.astype(np.float16).astype(np.float32)):
                fail("%s: F16 values differ from numpy's float16 rounding" % what)
        elif b.tensor_type == T.F32:
            if not np.array_equal(got, x):
                fail("%s: F32 values differ from the input's" % what)
        else:
            fail("%s: unexpected type %s" % (what, b.tensor_type.name))
        compared[b.tensor_type.name] = compared.get(b.tensor_type.name, 0) + 1
    print("ok %s: %s" % (where, ", ".join("%d %s" % (n, k) for k, n in sorted(compared.items()))))


def check_k_quants(chorus, work):
    """A 256-wide llama-shaped model written by gguf-py, quantised to K mixes, read back by gguf-py."""
    src = os.path.join(work, "k-src.gguf")
    w = gguf.GGUFWriter(src, "llama")
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_embedding_length(256)
    w.add_string("chorus.test", "written by gguf-py")
    w.add_array("chorus.test_array", [1, 2, 3])
    rng = np.random.default_rng(7)
    names = ["token_embd.weight", "output_norm.weight", "output.weight"]
    for i in range(2):
        names += ["blk.%d.%s.weight" % (i, n) for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    for n in names:
        shape = (256,) if "_norm" in n else (64, 256)  # numpy order: rows, then the row length
        w.add_tensor(n, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Relative L2 error of a 256-wide row of N(0,1) values, generously bounded.
    bound = {T.Q2_K: 0.5, T.Q3_K: 0.25, T.Q4_K: 0.15, T.Q5_K: 0.08, T.Q6_K: 0.04}
    # Q4_K_M with 2 layers: only layer 1 is a "more bits" layer (i >= 7 * 2 / 8).
    expect = {"Q4_K_M": {"output.weight": T.Q6_K, "blk.0.attn_v.weight": T.Q4_K, "blk.1.attn_v.weight": T.Q6_K,
                         "blk.0.ffn_down.weight": T.Q4_K, "blk.1.ffn_down.weight": T.Q6_K,
                         "blk.0.attn_q.weight": T.Q4_K, "token_embd.weight": T.Q4_K},
              "Q6_K": {"output.weight": T.Q6_K, "blk.0.attn_q.weight": T.Q6_K}}
    r_in = gguf.GGUFReader(src)
    for type_name, types in expect.items():
        out = os.path.join(work, "k.%s.gguf" % type_name)
        quantize(chorus, src, out, type_name)
        r_out = gguf.GGUFReader(out)
        where = "gguf-py model -> %s" % type_name
        check_metadata(r_in, r_out, where, type_name)
        by_name = {t.name: t for t in r_out.tensors}
        for name, t in types.items():
            if by_name[name].tensor_type != t:
                fail("%s: %s is %s, expected %s" % (where, name, by_name[name].tensor_type.name, t.name))
        for a in r_in.tensors:
            b = by_name[a.name]
            if b.tensor_type not in bound:
                continue
            x, got = as_f32(a), as_f32(b)
            err = float(np.linalg.norm(got - x) / np.linalg.norm(x))
            if not np.all(np.isfinite(got)) or err > bound[b.tensor_type]:
                fail("%s: %s (%s) dequantised by gguf-py is off by %.3f (relative L2), bound %.2f" % (
                    where, a.name, b.tensor_type.name, err, bound[b.tensor_type]))
        print("ok %s" % where)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    chorus, models, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    cases = {"stories260K.gguf": ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16"],
             "llama-2-tiny-random.gguf": ["Q8_0", "Q4_0", "BF16", "F32"]}
    for model, types in cases.items():
        path = os.path.join(models, model)
        if not os.path.exists(path):
            fail("%s is missing: the test needs ../shared/models beside the repository" % path)
        for t in types:
            check_plain(chorus, path, work, t)
    check_k_quants(chorus, work)
    print("quantize_gguf_py_test: all passed")


if __name__ == "__main__":
    main()
