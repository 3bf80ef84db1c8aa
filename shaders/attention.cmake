# Attention over the F16 KV cache and KV-cache stores.
# (engine/ops/attention.h records them; push constants and the KV-cache layout in
# attention.glsl.) Fallbacks use shared-memory reductions; subgroup variants use
# subgroupMax/subgroupAdd.
chorus_shader(OP kv_store SOURCE kv_store.comp)
chorus_shader(OP attention SOURCE attention.comp)
chorus_shader(OP attention SOURCE attention.comp REQUIRES subgroup)
chorus_shader(OP rope_store SOURCE rope_store.comp)
chorus_shader(OP rope_store_bias SOURCE rope_store.comp DEFINES BIAS=1)
# attention_row (attention_row.comp): one invocation per row, no shared memory or barriers;
# registered for CPU devices only (decode there, see engine/ops/attention.cpp).
chorus_shader(OP attention_row SOURCE attention_row.comp REQUIRES cpu)
# attention_lanes (attention_lanes.comp): lanes take cache positions, their partial softmaxes
# combined at the end (subgroup reductions, or shared memory in the fallback); CPU devices, long
# prefills (engine/ops/attention.cpp).
chorus_shader(OP attention_lanes SOURCE attention_lanes.comp REQUIRES cpu)
chorus_shader(OP attention_lanes SOURCE attention_lanes.comp REQUIRES cpu subgroup)
