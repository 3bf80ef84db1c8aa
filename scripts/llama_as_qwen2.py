#!/usr/bin/env python3
"""Writes a qwen2-architecture copy of a llama GGUF, for timing chorus's qwen2 path.

No Qwen2 model is among the ones scripts/fetch-models.sh fetches, so this takes a llama file
(SmolLM2-135M-Instruct, say), copies every metadata key (llama.* renamed qwen2.*) and every
tensor unchanged, and adds after each blk.N.attn_{q,k,v}.weight an F32 bias of that matrix's
rows, random (normal, std 0.1, fixed seed). The result has the llama file's shapes, formats and
weight bytes and runs qwen2's forward pass (Q/K/V biases, NeoX RoPE); its text is nonsense, so it
is for speed and for agreement with scripts/numpy_reference.py, not for answers.

    python3 scripts/llama_as_qwen2.py ~/.cache/chorus/models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/qwen2-smol.gguf

Needs python3 with the gguf and numpy packages (scripts/install-deps.sh installs them).
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: llama_as_qwen2.py LLAMA.gguf OUT.gguf")
    src, dst = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"]
    if bytes(arch.parts[arch.data[0]]).decode() != "llama":
        sys.exit(f"{src}: not a llama GGUF")
    w = GGUFWriter(dst, "qwen2")
    for f in r.fields.values():
        name = f.name
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name.startswith("llama."):
            name = "qwen2." + name[len("llama."):]
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                vals = [f.parts[i].tolist()[0] for i in f.data]
            w.add_key_value(name, vals, t, sub_type=sub)
        elif t == GGUFValueType.STRING:
            w.add_key_value(name, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
        else:
            w.add_key_value(name, f.parts[f.data[0]].tolist()[0], t)
    rng = np.random.default_rng(1)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
        for which in "qkv":
            if t.name.endswith(f"attn_{which}.weight"):
                rows = int(t.shape[1])  # GGUF order: ne0 (columns), ne1 (rows)
                w.add_tensor(t.name.replace(".weight", ".bias"), (rng.standard_normal(rows) * 0.1).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
