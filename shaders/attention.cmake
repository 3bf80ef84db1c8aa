# Attention over the F16 KV cache, KV-cache stores, argmax and top-k.
# (engine/ops/attention.h and engine/ops/select.h record them; push constants and the KV-cache
# layout in attention.glsl.) Fallbacks use shared-memory reductions; subgroup variants use
# subgroupMax/subgroupAdd/subgroupMin.
chorus_shader(OP kv_store SOURCE kv_store.comp)
chorus_shader(OP attention SOURCE attention.comp)
chorus_shader(OP attention SOURCE attention.comp REQUIRES subgroup)
chorus_shader(OP argmax SOURCE argmax.comp)
chorus_shader(OP argmax SOURCE argmax.comp REQUIRES subgroup)
chorus_shader(OP top_k SOURCE topk.comp)
chorus_shader(OP top_k SOURCE topk.comp REQUIRES subgroup)
