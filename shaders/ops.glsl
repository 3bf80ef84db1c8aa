// shaders/ops.glsl — push constants and helpers of the non-matrix kernels (engine/ops/ops.h).
//
// Each struct below is mirrored field for field by a C++ struct in engine/ops/ops.cpp with a
// static_assert on its size; all fields are 4-byte scalars, so std430 and C++ agree. Offsets
// named *_off are in elements of the buffer's declared type (floats, or uint words / bytes
// where stated) and already include the binding's alignment skip. Strides are in elements.
//
// Large grids: row kernels run one workgroup per row on a 2-D grid (rows may exceed 65535);
// ch_group_index() flattens it. Include after common.glsl.

struct RmsNormPush {
  uint x_off, w_off, y_off;
  uint n, rows;
  uint x_stride, y_stride;
  uint has_weight;
  float eps;
};

struct AddRmsNormPush {  // RmsNormPush, then the sum's place
  uint x_off, w_off, y_off;
  uint n, rows;
  uint x_stride, y_stride;
  uint has_weight;
  float eps;
  uint s_off, s_stride;
};

struct RmsNorm2Push {  // RmsNormPush, then the second weight's place and first row
  uint x_off, w_off, y_off;
  uint n, rows;
  uint x_stride, y_stride;
  uint has_weight;
  float eps;
  uint w2_off, w2_row;
};

struct RopePush {
  uint x_off, y_off, pos_off;
  uint n_tokens, n_heads, head_dim, n_dims;
  uint neox;  // 0: pairs (2i, 2i+1); 1: pairs (i, i + n_dims/2)
  uint x_tok_stride, x_head_stride, y_tok_stride, y_head_stride;
  float freq_base, freq_scale;
};

struct BinaryPush {
  uint x_off, y_off, z_off;
  uint n;   // elements of x and z
  uint ny;  // elements of y; z[i] = x[i] op y[i % ny]
};

struct GluPush {
  uint g_off, u_off, y_off;
  uint n, rows;
  uint g_stride, u_stride, y_stride;
};

// Copy/convert of a 3-D block: element (i0, i1, i2) is read at src_off + i0 + i1*s1 + i2*s2
// and written at dst_off + i0 + i1*d1 + i2*d2 (offsets and strides in elements of each side).
// get_rows: y[i][:] = dequant(W[ids[i]][:]) for ids inside this dispatch's window of W:
// rows [row_begin, row_begin + n_rows) of W start at byte w_off of the binding.
struct GetRowsPush {
  uint w_off;      // bytes
  uint ids_off;    // uint32 elements
  uint y_off;      // floats
  uint n;          // elements per row (a multiple of the format's block)
  uint n_ids;
  uint row_bytes;
  uint row_begin, n_rows;
  uint y_stride;   // floats between output rows
};

// The linear id of this workgroup on a 2-D grid of (gx, gy) groups.
uint ch_group_index() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

#ifdef OPS_REDUCE
// Workgroup-wide reductions (declare `layout(local_size_x_id = 0) in;` before including this
// file: ch_red is sized by gl_WorkGroupSize); every invocation of the workgroup must call them (they contain
// barriers) and gets the result. The fallback is a shared-memory tree and needs a
// power-of-two workgroup size (the host only uses such sizes); the subgroup variant
// combines one partial per subgroup and assumes nothing about the subgroup size.
shared float ch_red[gl_WorkGroupSize.x];

#if CHORUS_SUBGROUP
float ch_wg_sum(float v) {
  v = subgroupAdd(v);
  if (subgroupElect()) ch_red[gl_SubgroupID] = v;
  barrier();
  float s = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; ++i) s += ch_red[i];
  barrier();  // ch_red is reused by the next reduction
  return s;
}
float ch_wg_max(float v) {
  v = subgroupMax(v);
  if (subgroupElect()) ch_red[gl_SubgroupID] = v;
  barrier();
  float m = ch_red[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) m = max(m, ch_red[i]);
  barrier();
  return m;
}
#else
float ch_wg_sum(float v) {
  const uint lid = gl_LocalInvocationID.x;
  ch_red[lid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (lid < s) ch_red[lid] += ch_red[lid + s];
    barrier();
  }
  const float r = ch_red[0];
  barrier();
  return r;
}
float ch_wg_max(float v) {
  const uint lid = gl_LocalInvocationID.x;
  ch_red[lid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (lid < s) ch_red[lid] = max(ch_red[lid], ch_red[lid + s]);
    barrier();
  }
  const float r = ch_red[0];
  barrier();
  return r;
}
#endif
#endif
