// engine/weights.h — what one device holds of a loaded model (internal to engine/).
//
// Owns: the device-side weight shards model.cpp uploads and forward.cpp reads: per layer one
// slot per table tensor (engine/arch.h), each the part split::DeviceShard gives the device.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/arch.h"
#include "engine/model.h"
#include "engine/ops/kernels.h"
#include "engine/quant.h"
#include "split/plan.h"
#include "vkdevice/memory.h"

namespace chorus {

// A weight on one device: `rows` rows of `cols` elements in the device block layout (a
// matrix shard), or an F32 vector (norms, biases; rows = 1), at byte `offset` of its buffer.
// Empty when the device holds none. Matrices a decode step multiplies by the same vector
// (Q, K, V; gate, up) share one buffer, one after another, when their formats agree
// (engine/model.cpp), so that one product reads them all (engine/forward.cpp).
struct DeviceTensor {
  GgmlType type = GgmlType::F32;
  uint32_t cols = 0;  // ne[0] of the shard
  uint32_t rows = 0;  // ne[1] of the shard
  std::shared_ptr<const vk::Buffer> mem;
  uint64_t offset = 0;
  const vk::Buffer& buf() const { return *mem; }
  explicit operator bool() const { return mem && *mem; }
  // Whether `next` starts where this tensor's rows end, in the same buffer and format.
  bool followed_by(const DeviceTensor& next) const {
    return *this && next && mem == next.mem && type == next.type && cols == next.cols &&
           next.offset == offset + uint64_t(rows) * (*device_row_bytes(type, cols));
  }
};

// One layer's shard on one device, indexed by LayerTensor. Matrices cut by rows hold the
// device's rows ([n_embd, its q/kv/ffn rows]); attn_output and ffn_down hold its K slice.
struct Layer {
  std::array<DeviceTensor, kLayerTensors> t;
  const DeviceTensor& operator[](LayerTensor id) const { return t[static_cast<size_t>(id)]; }
  DeviceTensor& operator[](LayerTensor id) { return t[static_cast<size_t>(id)]; }
};

// Everything one device holds.
struct Shard {
  vk::Device* dev = nullptr;
  std::unique_ptr<ops::Kernels> kernels;
  split::DeviceShard spec;
  DeviceTensor tok_embd;      // [n_embd, n_vocab], when spec.embedding
  DeviceTensor output_norm;   // [n_embd] f32, when spec.output_norm
  DeviceTensor lm_head;       // [n_embd, vocab rows]; empty when the rows are read from tok_embd
  std::vector<Layer> layers;  // n_layer entries, filled for spec.layers
  std::string pipeline_list;                // where this shard's pipeline list is kept ("": nowhere)
  std::vector<ops::PipelineKey> listed;     // what it held at load

  // The LM head rows of this device and where they start in their buffer.
  const DeviceTensor& head() const { return lm_head ? lm_head : tok_embd; }
  uint64_t head_offset() const {
    return lm_head ? 0 : spec.vocab.begin * (*device_row_bytes(tok_embd.type, tok_embd.cols));
  }
};

struct Model::Impl {
  split::Plan plan;
  std::vector<Shard> shards;
  size_t queued = 0;     // pipelines queued for Kernels::prepare, all devices
  double upload_ms = 0;  // the load's uploads
};

// Allocation labels (vk::Allocator counts bytes per label).
constexpr const char* kWeights = "weights";
constexpr const char* kKvCache = "kv cache";
constexpr const char* kScratch = "scratch";

}  // namespace chorus
