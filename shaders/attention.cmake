# Attention over the F16 KV cache, KV-cache stores, argmax and top-k.
