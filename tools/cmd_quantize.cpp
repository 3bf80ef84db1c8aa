// `chorus quantize IN OUT TYPE`: a GGUF model re-encoded in another weight format, with
// llama.cpp's type mixes (engine/quantize.h) and its file-type numbers.
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/quantize.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace chorus::tools {

namespace {

std::string target_list() {
  std::string s;
  for (const QuantTarget& t : quant_targets())
    s += std::string(s.empty() ? "" : " ") + t.name + (t.alias_of ? std::string("(=") + t.alias_of + ")" : "");
  return s;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// head_count / head_count_kv of the model's architecture; 1 when either is absent.
uint32_t gqa_ratio(const gguf::File& f) {
  const auto arch = f.get_string("general.architecture");
  if (!arch) return 1;
  const std::string a(*arch);
  const auto heads = f.get_u32(a + ".attention.head_count");
  const auto kv = f.get_u32(a + ".attention.head_count_kv");
  return heads && kv && *kv > 0 ? *heads / *kv : 1;
}

std::string human_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes < 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

int cmd_quantize(const std::vector<std::string>& args) {
  std::vector<std::string> pos;
  QuantOptions options;
  bool allow_requantize = false;
  cli::Parser p(
      "usage: chorus quantize IN.gguf OUT.gguf TYPE [--pure] [--allow-requantize]",
      "Writes OUT: IN with its weight matrices re-encoded as TYPE, every metadata key copied and\n"
      "general.file_type set to llama.cpp's number for TYPE (general.quantization_version = 2, as\n"
      "llama-quantize). OUT is written to a temporary file beside it and renamed at the end; OUT may\n"
      "not be IN.\n"
      "TYPE: " + target_list() + "\n"
      "Which tensors change (llama.cpp's rules, docs/models.md \"Quantising\"): names ending in\n"
      "'weight' with 2 or more dimensions, except *_norm.weight and ffn_gate_inp.weight; the rest\n"
      "(norms, biases, 1-D tensors) are copied unchanged. Plain types (Q8_0, Q4_0 ... F16) give every\n"
      "such tensor that type, except output.weight (token_embd.weight when there is no output), which\n"
      "gets Q6_K (Q8_0 stays Q8_0; Q8_0 if its rows do not fit the base type's blocks). The K mixes:\n"
      "  attn_v:      Q2_K: Q4_K if n_head/n_head_kv >= 4 else Q3_K; Q2_K_S: Q4_K if that ratio >= 4;\n"
      "               Q3_K_M: Q5_K for the first 2, then Q4_K; Q3_K_L: Q5_K; Q4_K_S: Q5_K for the first 4;\n"
      "               Q4_K_M, Q5_K_M: Q6_K on the 'more bits' layers*\n"
      "  ffn_down:    Q2_K: Q3_K; Q2_K_S: Q4_K on the first n/8; Q3_K_M: Q5_K on the first n/16, then\n"
      "               Q4_K; Q3_K_L: Q5_K; Q4_K_S: Q5_K on the first n/8; Q4_K_M, Q5_K_M: Q6_K on the\n"
      "               'more bits' layers*\n"
      "  attn_output: Q2_K: Q3_K; Q3_K_M: Q4_K; Q3_K_L: Q5_K\n"
      "  attn_qkv:    Q3_K_M, Q3_K_L: Q4_K; Q4_K_M: Q5_K; Q5_K_M: Q6_K\n"
      "  * layer i of n with i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2.\n"
      "Rows that are not a whole number of the chosen type's blocks fall back: Q4_K -> Q5_0,\n"
      "Q5_K -> Q5_1, Q6_K -> Q8_0 (as llama.cpp); Q2_K, Q3_K -> Q4_0 (llama.cpp: IQ4_NL, which chorus\n"
      "lacks); any other -> F16 (llama.cpp refuses); F16 when the fallback does not fit either.\n"
      "Input tensors already quantised are refused unless --allow-requantize (then dequantised to f32\n"
      "and quantised again, which loses more than quantising the original would); a tensor whose type\n"
      "does not change is copied byte for byte.");
  p.flag({"--pure"}, "no mix: every quantised tensor (output and token_embd too) gets TYPE's base type",
         [&] { options.pure = true; })
      .flag({"--allow-requantize"}, "dequantise already-quantised input tensors and quantise them again",
            allow_requantize)
      .positional("IN OUT TYPE", "the input model, the file to write, the target type", [&](const std::string& a) {
        if (pos.size() == 3) throw UsageError("expected IN OUT TYPE, got a fourth argument '" + a + "'");
        pos.push_back(a);
      });
  if (!p.parse(args)) return 0;
  if (pos.size() != 3) throw UsageError("expected IN OUT TYPE (e.g. model-f32.gguf model-q8.gguf Q8_0)");
  const std::string &in_path = pos[0], &out_path = pos[1];
  const QuantTarget* target = find_quant_target(pos[2]);
  if (!target) throw UsageError("unknown TYPE '" + pos[2] + "'; one of: " + target_list());
  if (in_path == out_path || same_file(in_path, out_path))
    throw UsageError("OUT '" + out_path + "' is the input file; write to another path");

  const gguf::File in = gguf::File::open(in_path);
  options.n_gqa = gqa_ratio(in);
  std::vector<TensorDesc> descs;
  for (const gguf::TensorInfo& t : in.tensors()) descs.push_back({t.name, t.n_dims, t.ne[0], t.type});
  const std::vector<TensorChoice> plan = plan_quantisation(*target, descs, options);

  for (size_t i = 0; i < plan.size(); ++i) {
    const gguf::TensorInfo& t = in.tensors()[i];
    const bool block_input = t.type != GgmlType::F32 && t.type != GgmlType::F16 && t.type != GgmlType::BF16;
    if (plan[i].quantised && block_input && plan[i].type != t.type && !allow_requantize)
      in.fail("tensor '" + std::string(t.name) + "' is already " + t.traits->name +
              "; quantising it again to " + type_traits(plan[i].type).name +
              " compounds the error (pass --allow-requantize to do it anyway, or start from the F32/F16/BF16 model)");
  }

  gguf::Writer out(out_path, in.alignment());
  bool wrote_file_type = false, wrote_qversion = false;
  for (const gguf::KeyValue& kv : in.metadata()) {
    if (kv.key == "general.file_type") {
      out.add_kv_u32(kv.key, target->file_type);
      wrote_file_type = true;
    } else if (kv.key == "general.quantization_version") {
      out.add_kv_u32(kv.key, 2);
      wrote_qversion = true;
    } else {
      out.add_kv(kv.key, kv.value);
    }
  }
  if (!wrote_qversion) out.add_kv_u32("general.quantization_version", 2);
  if (!wrote_file_type) out.add_kv_u32("general.file_type", target->file_type);
  for (size_t i = 0; i < plan.size(); ++i) out.add_tensor(in.tensors()[i].name, in.tensors()[i].dims(), plan[i].type);
  out.begin_data();
  install_interrupt_handler();  // Ctrl-C stops between tensors; `out` then removes its temporary file

  std::map<std::string, size_t> counts;
  size_t n_fallback = 0;
  const size_t n = plan.size();
  for (size_t i = 0; i < n; ++i) {
    if (interrupted()) {
      std::fprintf(stderr, "chorus quantize: interrupted after %zu of %zu tensors; %s was not written\n", i, n,
                   out_path.c_str());
      return kInterruptedExit;
    }
    const gguf::TensorInfo& t = in.tensors()[i];
    const TensorChoice& c = plan[i];
    std::string dims;
    for (const uint64_t d : t.dims()) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    std::fprintf(stderr, "[%4zu/%zu] %-32.*s [%s] %s -> %s", i + 1, n, static_cast<int>(t.name.size()), t.name.data(),
                 dims.c_str(), t.traits->name, type_traits(c.type).name);
    if (c.fallback) {
      std::fprintf(stderr, " (fallback: rows of %" PRIu64 " are not whole %s blocks)", t.ne[0], type_traits(c.wanted).name);
      ++n_fallback;
    }
    if (c.type == t.type) {
      out.write_tensor(t.data);
      std::fprintf(stderr, ", %s copied\n", human_bytes(t.size).c_str());
    } else {
      std::vector<uint8_t> bytes;
      try {
        bytes = convert_rows(t.type, t.data, c.type, t.ne[0], t.n_rows());
      } catch (const std::invalid_argument& e) {
        in.fail("tensor '" + std::string(t.name) + "': " + e.what());
      }
      out.write_tensor(bytes);
      std::fprintf(stderr, ", %s -> %s\n", human_bytes(t.size).c_str(), human_bytes(bytes.size()).c_str());
    }
    ++counts[type_traits(c.type).name];
  }
  out.finish();

  std::fprintf(stderr, "chorus quantize: %s (%s) -> %s (%s), %s, general.file_type %u\n", in_path.c_str(),
               human_bytes(in.file_size()).c_str(), out_path.c_str(), human_bytes(out.file_size()).c_str(), target->name,
               target->file_type);
  std::string summary;
  for (const auto& [name, count] : counts) summary += (summary.empty() ? "" : ", ") + std::to_string(count) + " " + name;
  std::fprintf(stderr, "chorus quantize: %zu tensors: %s; %zu fell back for their row length\n", n, summary.c_str(),
               n_fallback);
  return 0;
}

}  // namespace chorus::tools
