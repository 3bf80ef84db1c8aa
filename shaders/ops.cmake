# Element-wise, normalisation, RoPE, attention, selection and conversion kernels.
