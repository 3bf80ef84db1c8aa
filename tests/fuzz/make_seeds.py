#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz harnesses into tests/fuzz/seeds/<target>/.

Small hand-made GGUF files (a SentencePiece and a byte-level BPE vocabulary, every metadata
value type, one tensor) and texts for the tokenizer. Run it again after changing it; the
files are committed so CI fuzzes from the same start every time.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
          I64: "<q", F64: "<d"}


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors=()):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml_type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + value(t, v)
    offset, blobs = 0, b""
    for name, dims, gtype, data in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, offset)
        blobs += data + b"\0" * ((-len(data)) % 32)
        offset += len(data) + (-len(data)) % 32
    out += b"\0" * ((-len(out)) % 32)
    return out + blobs


def spm_vocab():
    tokens = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "<0x41>", "<0xFF>", "\u2581Hello",
              "\u2581world", "1", "2"]
    return gguf([
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0, 0, -1, -2, -2, -3, -1, -0.5, 0, 0, -1, -1, -2, -2])),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 1, 1, 1, 1])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
    ])


def bpe_vocab(pre):
    tokens = ["<|endoftext|>", "H", "e", "l", "o", "\u0120", "w", "r", "d", "!", "He", "ll", "llo", "Hello", "\u0120w",
              "\u0120wor", "or", "1", "2", "\u00ff", "\u00c3"]
    merges = ["H e", "l l", "ll o", "He llo", "\u0120 w", "o r", "\u0120w or"]
    return gguf([
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, pre),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, [3] + [1] * (len(tokens) - 1))),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 0),
        ("tokenizer.ggml.eos_token_id", U32, 0),
    ])


def every_type():
    return gguf([
        ("u8", U8, 200), ("i8", I8, -100), ("u16", U16, 60000), ("i16", I16, -30000), ("u32", U32, 4000000000),
        ("i32", I32, -2000000000), ("f32", F32, 1.5), ("bool", BOOL, True), ("string", STR, "text"),
        ("u64", U64, 2**63), ("i64", I64, -2**62), ("f64", F64, -0.25),
        ("strings", ARR, (STR, ["a", "bc", ""])), ("floats", ARR, (F32, [1.0, -2.0])), ("ints", ARR, (I32, [1, -1])),
        ("empty", ARR, (U32, [])),
        ("general.alignment", U32, 32),
    ], tensors=[("token_embd.weight", [4, 2], 0, struct.pack("<8f", *range(8)))])


TEXTS = [
    b"Hello world!",
    b"a\xffb\xfe\xc0c \xe2\x82x \xf0\x9f\x98",
    b"<s> special </s> <|endoftext|> <unk>",
    "caf\u00e9 \u4f60\u597d \U0001f600 \u00a0\u2003".encode("utf-8"),
    b"12345 3.14159 1,000,000",
    b"I'm don't we'll THEY'RE",
    b"\t\n  \r\n   x  \n\n",
    b"ab" * 40,
]


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    files = {"spm-vocab": spm_vocab(), "bpe-vocab-gpt2": bpe_vocab("gpt-2"), "bpe-vocab-llama3": bpe_vocab("llama-bpe"),
             "bpe-vocab-smollm": bpe_vocab("smollm"), "every-type": every_type(),
             "nested-array": gguf([("nested", ARR, (ARR, [(U8, [1, 2]), (U8, [])]))])}
    for target in ("fuzz_gguf", "fuzz_gguf_getters", "fuzz_vocab"):
        for name, data in files.items():
            write(target, name, data)
    for i, text in enumerate(TEXTS):
        for vocab in range(4):
            write("fuzz_tokenizer", "text%d-vocab%d" % (i, vocab), bytes([vocab, 0]) + text)
        write("fuzz_tokenizer", "text%d-special" % i, bytes([i % 4, 3]) + text)


if __name__ == "__main__":
    main()
