# Dequantising matrix-vector kernels (decode): one source per weight format.
