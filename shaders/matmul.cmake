# Tiled matrix-matrix kernels (prefill): one source per weight format.
