// `chorus quantize`: the type rules (pure, engine/quantize.h), then the command on the two real
// models in ../shared: every tensor present with the type the rules give, metadata equal apart
// from general.file_type and general.quantization_version, values equal to quantize_row ->
// dequantize_row of the input; and the quantised stories260K runs and keeps its perplexity.
// gguf-py's side of the check is tests/quantize_gguf_py_test.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/quantize.h"
#include "tests/gpu.h"
#include "tests/model_writer.h"

namespace chorus {
namespace {

using G = GgmlType;

// `chorus ARGS`, stdout and stderr together.
test::CommandResult chorus_cmd(const std::string& args) { return test::run_command(std::string(CHORUS_BINARY) + " " + args); }

std::string device_flag() {
  const char* d = std::getenv("CHORUS_TEST_DEVICE");
  return d ? std::string(" --device ") + d : std::string();
}

std::string temp_dir() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("chorus_test_quantize_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

// Removes temp_dir() once every test has run.
class TempDirCleanup : public ::testing::Environment {
 public:
  void TearDown() override { std::filesystem::remove_all(temp_dir()); }
};
::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new TempDirCleanup);

// A llama-shaped model's tensor list: n_layer blocks of width `width`.
std::vector<std::string> names_of_layers(int n_layer) {
  std::vector<std::string> names{"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int i = 0; i < n_layer; ++i)
    for (const char* t : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"})
      names.push_back("blk." + std::to_string(i) + "." + t + ".weight");
  return names;
}

std::vector<TensorChoice> plan_for(const char* target, const std::vector<std::string>& names, uint64_t width,
                                   QuantOptions opt = {}) {
  std::vector<TensorDesc> descs;
  for (const std::string& n : names) {
    const bool one_d = n.find("_norm") != std::string::npos;
    descs.push_back({n, one_d ? 1u : 2u, width, G::F32});
  }
  return plan_quantisation(*find_quant_target(target), descs, opt);
}

G type_of(const std::vector<std::string>& names, const std::vector<TensorChoice>& plan, const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return plan[i].type;
  ADD_FAILURE() << "no tensor " << name;
  return G::F32;
}

TEST(QuantPlan, Q4_K_MPutsQ6_KOnOutputAndOnTheMoreBitsLayersOfAttnVAndFfnDown) {
  const auto names = names_of_layers(8);
  const auto plan = plan_for("Q4_K_M", names, 4096);
  EXPECT_EQ(type_of(names, plan, "output.weight"), G::Q6_K);
  EXPECT_EQ(type_of(names, plan, "token_embd.weight"), G::Q4_K);
  EXPECT_EQ(type_of(names, plan, "output_norm.weight"), G::F32);
  // n = 8: i < 1, i >= 7, (i - 1) % 3 == 2 -> layers 0, 3, 6, 7.
  for (int i = 0; i < 8; ++i) {
    const G more = (i == 0 || i == 3 || i == 6 || i == 7) ? G::Q6_K : G::Q4_K;
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(type_of(names, plan, b + "attn_v.weight"), more) << i;
    EXPECT_EQ(type_of(names, plan, b + "ffn_down.weight"), more) << i;
    EXPECT_EQ(type_of(names, plan, b + "attn_q.weight"), G::Q4_K) << i;
    EXPECT_EQ(type_of(names, plan, b + "attn_norm.weight"), G::F32) << i;
  }
}

TEST(QuantPlan, Q3_K_MAndQ2_KFollowLlamaCppsMix) {
  const auto names = names_of_layers(16);
  const auto q3 = plan_for("Q3_K_M", names, 4096);
  EXPECT_EQ(type_of(names, q3, "blk.0.attn_v.weight"), G::Q5_K);
  EXPECT_EQ(type_of(names, q3, "blk.1.attn_v.weight"), G::Q5_K);
  EXPECT_EQ(type_of(names, q3, "blk.2.attn_v.weight"), G::Q4_K);
  EXPECT_EQ(type_of(names, q3, "blk.0.ffn_down.weight"), G::Q5_K);  // i < 16/16
  EXPECT_EQ(type_of(names, q3, "blk.1.ffn_down.weight"), G::Q4_K);
  EXPECT_EQ(type_of(names, q3, "blk.5.attn_output.weight"), G::Q4_K);
  EXPECT_EQ(type_of(names, q3, "blk.5.ffn_up.weight"), G::Q3_K);
  QuantOptions gqa4;
  gqa4.n_gqa = 4;
  const auto q2 = plan_for("Q2_K", names, 4096, gqa4);
  EXPECT_EQ(type_of(names, q2, "blk.3.attn_v.weight"), G::Q4_K);
  EXPECT_EQ(type_of(names, plan_for("Q2_K", names, 4096), "blk.3.attn_v.weight"), G::Q3_K);
  EXPECT_EQ(type_of(names, q2, "blk.3.ffn_down.weight"), G::Q3_K);
  EXPECT_EQ(type_of(names, q2, "blk.3.attn_output.weight"), G::Q3_K);
  EXPECT_EQ(type_of(names, q2, "blk.3.ffn_gate.weight"), G::Q2_K);
}

TEST(QuantPlan, PlainTypesGiveOutputQ6_KUnlessQ8_0AndPureGivesEverythingTheBaseType) {
  const auto names = names_of_layers(2);
  EXPECT_EQ(type_of(names, plan_for("Q4_0", names, 4096), "output.weight"), G::Q6_K);
  EXPECT_EQ(type_of(names, plan_for("Q8_0", names, 4096), "output.weight"), G::Q8_0);
  EXPECT_EQ(type_of(names, plan_for("F16", names, 4096), "output.weight"), G::F16);
  QuantOptions pure;
  pure.pure = true;
  const auto p = plan_for("Q4_K_M", names, 4096, pure);
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(p[i].type, names[i].find("_norm") == std::string::npos ? G::Q4_K : G::F32) << names[i];
}

TEST(QuantPlan, TiedEmbeddingsFollowTheOutputRule) {
  std::vector<std::string> names = names_of_layers(1);
  names.erase(names.begin() + 2);  // no output.weight
  EXPECT_EQ(type_of(names, plan_for("Q4_K_M", names, 4096), "token_embd.weight"), G::Q6_K);
}

TEST(QuantPlan, RowsThatAreNotWholeBlocksFallBackAsStated) {
  EXPECT_EQ(fallback_type(G::Q4_K, 64), G::Q5_0);
  EXPECT_EQ(fallback_type(G::Q5_K, 64), G::Q5_1);
  EXPECT_EQ(fallback_type(G::Q6_K, 64), G::Q8_0);
  EXPECT_EQ(fallback_type(G::Q2_K, 64), G::Q4_0);
  EXPECT_EQ(fallback_type(G::Q3_K, 96), G::Q4_0);
  EXPECT_EQ(fallback_type(G::Q4_K, 172), G::F16);  // 172 is not whole Q5_0 blocks either
  EXPECT_EQ(fallback_type(G::Q8_0, 172), G::F16);
  const auto names = names_of_layers(1);
  const auto plan = plan_for("Q4_K_M", names, 64);
  EXPECT_EQ(type_of(names, plan, "output.weight"), G::Q8_0);  // 64 % 256: Q8_0 by the output rule, no fallback
  EXPECT_EQ(type_of(names, plan, "token_embd.weight"), G::Q5_0);
  EXPECT_EQ(type_of(names, plan, "blk.0.attn_v.weight"), G::Q8_0);  // Q6_K wanted (layer 0 of 1)
  EXPECT_EQ(type_of(names, plan, "blk.0.attn_q.weight"), G::Q5_0);
}

TEST(QuantTargets, EveryTargetHasLlamaCppsFileTypeAndAliasesMapToTheMediumMix) {
  EXPECT_EQ(find_quant_target("Q4_K_M")->file_type, 15u);
  EXPECT_EQ(find_quant_target("q4_k_m")->file_type, 15u);
  EXPECT_EQ(find_quant_target("Q4_K")->file_type, 15u);
  EXPECT_EQ(find_quant_target("Q8_0")->file_type, 7u);
  EXPECT_EQ(find_quant_target("Q5_0")->file_type, 8u);
  EXPECT_EQ(find_quant_target("BF16")->file_type, 32u);
  EXPECT_EQ(find_quant_target("Q2_K_S")->file_type, 21u);
  EXPECT_EQ(find_quant_target("Q6_K")->file_type, 18u);
  EXPECT_EQ(find_quant_target("IQ4_NL"), nullptr);
}

// --- the command on real models ------------------------------------------------------------------

struct Case {
  const char* model;
  const char* type;
};

std::string quantized_path(const Case& c) { return temp_dir() + "/" + c.model + "." + c.type + ".gguf"; }

void quantize_and_check(const std::string& in_path, const std::string& out_path, const Case& c) {
  const test::CommandResult r = chorus_cmd(std::string("quantize ") + in_path + " " + out_path + " " + c.type);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chorus quantize: "), std::string::npos) << r.output;

  const gguf::File in = gguf::File::open(in_path);
  const gguf::File out = gguf::File::open(out_path);
  const QuantTarget& target = *find_quant_target(c.type);

  // Metadata: the same keys in the same order and the same values, except the two quantize sets.
  std::vector<const gguf::KeyValue*> kept;
  for (const auto& kv : out.metadata())
    if (kv.key != "general.file_type" && kv.key != "general.quantization_version") kept.push_back(&kv);
  std::vector<const gguf::KeyValue*> want;
  for (const auto& kv : in.metadata())
    if (kv.key != "general.file_type" && kv.key != "general.quantization_version") want.push_back(&kv);
  ASSERT_EQ(kept.size(), want.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i]->key, want[i]->key);
    EXPECT_EQ(gguf::describe_type(kept[i]->value), gguf::describe_type(want[i]->value)) << want[i]->key;
    EXPECT_TRUE(std::equal(kept[i]->value.bytes.begin(), kept[i]->value.bytes.end(), want[i]->value.bytes.begin(),
                           want[i]->value.bytes.end()))
        << want[i]->key;
  }
  EXPECT_EQ(out.get_u32("general.file_type"), target.file_type);
  EXPECT_EQ(out.get_u32("general.quantization_version"), 2u);

  // Tensors: all there, same shapes, the planned types, values as quantize_row -> dequantize_row.
  ASSERT_EQ(out.tensors().size(), in.tensors().size());
  std::vector<TensorDesc> descs;
  for (const auto& t : in.tensors()) descs.push_back({t.name, t.n_dims, t.ne[0], t.type});
  QuantOptions opt;
  opt.n_gqa = *in.get_u32("llama.attention.head_count") / *in.get_u32("llama.attention.head_count_kv");
  const auto plan = plan_quantisation(target, descs, opt);
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const gguf::TensorInfo& a = in.tensors()[i];
    const gguf::TensorInfo* b = out.find_tensor(a.name);
    ASSERT_NE(b, nullptr) << a.name;
    EXPECT_EQ(b->n_dims, a.n_dims) << a.name;
    EXPECT_EQ(b->ne, a.ne) << a.name;
    EXPECT_EQ(b->type, plan[i].type) << a.name;
    if (a.n_dims == 1) {
      EXPECT_EQ(b->type, a.type) << a.name << ": 1-D tensors are copied";
    }
    if (b->type == a.type) {
      EXPECT_TRUE(std::equal(a.data.begin(), a.data.end(), b->data.begin(), b->data.end())) << a.name;
      continue;
    }
    const auto n0 = static_cast<int64_t>(a.ne[0]);
    std::vector<float> src(a.ne[0]), want_row(a.ne[0]), got(a.ne[0]);
    std::vector<uint8_t> q(*row_bytes(b->type, a.ne[0]));
    for (uint64_t row = 0; row < a.n_rows(); ++row) {
      dequantize_row(a.type, a.data.data() + row * a.row_bytes(), src.data(), n0);
      quantize_row(b->type, src.data(), q.data(), n0);
      dequantize_row(b->type, q.data(), want_row.data(), n0);
      dequantize_row(b->type, b->data.data() + row * b->row_bytes(), got.data(), n0);
      ASSERT_EQ(got, want_row) << a.name << " row " << row;
    }
  }
}

TEST(QuantizeCommand, Stories260KToEveryFormatReadsBackWithThePlannedTypesAndValues) {
  for (const char* type : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16", "Q2_K", "Q3_K_M", "Q4_K_M", "Q4_K_S",
                           "Q5_K_M", "Q6_K"}) {
    SCOPED_TRACE(type);
    const Case c{"stories260K.gguf", type};
    quantize_and_check(test::shared_model(c.model), quantized_path(c), c);
  }
}

TEST(QuantizeCommand, LlamaTinyRandomFromF16ReadsBackWithThePlannedTypesAndValues) {
  for (const char* type : {"Q8_0", "Q4_0", "BF16", "F32", "Q5_K_M"}) {
    SCOPED_TRACE(type);
    const Case c{"llama-2-tiny-random.gguf", type};
    quantize_and_check(test::shared_model(c.model), quantized_path(c), c);
  }
}

// Both real models are too narrow for any K-quant block (rows of 8 to 172): a random model with
// 256-wide rows (tests/model_writer.h) takes every K mix without fallback.
TEST(QuantizeCommand, A256WideModelTakesEveryKMixWithThePlannedTypesAndValues) {
  test::ModelWriter w;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.block_count", 4);
  w.kv_u32("llama.attention.head_count", 8);
  w.kv_u32("llama.attention.head_count_kv", 2);
  w.kv_str_array("chorus.test_strings", {"a", "bc", ""});
  std::mt19937 rng(5);
  w.tensor("token_embd.weight", 256, 64, G::F32, 1.0f, rng);
  w.tensor("output_norm.weight", 256, 1, G::F32, 1.0f, rng);
  w.tensor("output.weight", 256, 64, G::F16, 1.0f, rng);
  for (int i = 0; i < 4; ++i)
    for (const char* t : {"attn_norm", "attn_q", "attn_v", "attn_output", "ffn_down"})
      w.tensor("blk." + std::to_string(i) + "." + t + ".weight", 256, std::string(t) == "attn_norm" ? 1 : 8, G::F32,
               0.5f, rng);
  const std::string in = w.write(temp_dir() + "/wide.gguf");
  for (const char* type : {"Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M",
                           "Q6_K", "Q4_0"}) {
    SCOPED_TRACE(type);
    const Case c{"wide.gguf", type};
    quantize_and_check(in, quantized_path(c), c);
  }
  const gguf::File q2 = gguf::File::open(quantized_path({"wide.gguf", "Q2_K"}));
  EXPECT_EQ(q2.require_tensor("blk.0.attn_v.weight").type, G::Q4_K);  // n_head / n_head_kv = 4
  EXPECT_EQ(q2.require_tensor("blk.0.ffn_down.weight").type, G::Q3_K);
  EXPECT_EQ(q2.require_tensor("blk.0.attn_q.weight").type, G::Q2_K);
  EXPECT_EQ(q2.require_tensor("output.weight").type, G::Q6_K);
}

TEST(QuantizeCommand, Stories260KQ8_0FallsBackToF16ForTheRowsOf172) {
  const gguf::File out = gguf::File::open(quantized_path({"stories260K.gguf", "Q8_0"}));
  EXPECT_EQ(out.require_tensor("blk.0.ffn_down.weight").type, G::F16);
  EXPECT_EQ(out.require_tensor("blk.0.ffn_up.weight").type, G::Q8_0);
  EXPECT_EQ(out.require_tensor("output.weight").type, G::Q8_0);
  EXPECT_EQ(out.require_tensor("blk.0.attn_norm.weight").type, G::F32);
}

TEST(QuantizeCommand, RefusesTheInputAsOutputAndUnknownTypesAndRequantising) {
  const std::string in = test::shared_model("stories260K.gguf");
  const test::CommandResult same = chorus_cmd("quantize " + in + " " + in + " Q8_0");
  EXPECT_EQ(same.exit_code, 2) << same.output;
  EXPECT_NE(same.output.find("is the input file"), std::string::npos) << same.output;
  const test::CommandResult unknown = chorus_cmd("quantize " + in + " " + temp_dir() + "/x.gguf Q7_0");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("Q4_K_M"), std::string::npos) << unknown.output;
  EXPECT_FALSE(std::filesystem::exists(temp_dir() + "/x.gguf"));

  const test::CommandResult help = chorus_cmd("quantize --help");
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("usage: chorus quantize"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("Q4_K_M"), std::string::npos) << help.output;
  const test::CommandResult misspelt = chorus_cmd("quantize " + in + " " + temp_dir() + "/x.gguf Q8_0 --pur");
  EXPECT_EQ(misspelt.exit_code, 2) << misspelt.output;
  EXPECT_NE(misspelt.output.find("did you mean '--pure'?"), std::string::npos) << misspelt.output;

  const std::string q8 = temp_dir() + "/requant-src.gguf";
  ASSERT_EQ(chorus_cmd("quantize " + in + " " + q8 + " Q8_0").exit_code, 0);
  const std::string q4 = temp_dir() + "/requant.gguf";
  const test::CommandResult refused = chorus_cmd("quantize " + q8 + " " + q4 + " Q4_0");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("already Q8_0"), std::string::npos) << refused.output;
  EXPECT_FALSE(std::filesystem::exists(q4)) << "a refused quantize must leave no output";
  const test::CommandResult allowed = chorus_cmd("quantize " + q8 + " " + q4 + " Q4_0 --allow-requantize");
  EXPECT_EQ(allowed.exit_code, 0) << allowed.output;
  for (const auto& e : std::filesystem::directory_iterator(temp_dir()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "temporary file left: " << e.path();
}

// --- on the GPU --------------------------------------------------------------------------------

double final_ppl(const std::string& out) {
  // (No std::regex: GCC 12's <regex> trips -Wmaybe-uninitialized in the sanitizer builds.)
  const std::string marker = "Final estimate: PPL = ";
  const size_t at = out.find(marker);
  if (at == std::string::npos) return -1.0;
  char* end = nullptr;
  const double v = std::strtod(out.c_str() + at + marker.size(), &end);
  return end == out.c_str() + at + marker.size() ? -1.0 : v;
}

TEST(QuantizeCommand, QuantisedStories260KRunsAndQ8_0KeepsThePerplexityWithinOnePercent) {
  const std::string f32 = test::shared_model("stories260K.gguf");
  const std::string corpus = test::shared_dir() + "/corpus/tinystories-valid-excerpt.txt";
  ASSERT_TRUE(std::filesystem::exists(corpus)) << corpus << " is missing: the tests need ../shared/corpus";
  for (const char* type : {"Q8_0", "Q4_K_M"}) {
    const std::string q = temp_dir() + "/run." + type + ".gguf";
    ASSERT_EQ(chorus_cmd("quantize " + f32 + " " + q + " " + type).exit_code, 0);
    const test::CommandResult run = chorus_cmd("run -m " + q + " -p 'Once upon a time' -n 16 --temp 0" + device_flag());
    EXPECT_EQ(run.exit_code, 0) << type << ": " << run.output;
  }
  const std::string args = " -f " + corpus + " -c 128 --chunks 4" + device_flag();
  const test::CommandResult base = chorus_cmd("perplexity -m " + f32 + args);
  const test::CommandResult q8 = chorus_cmd("perplexity -m " + temp_dir() + "/run.Q8_0.gguf" + args);
  ASSERT_EQ(base.exit_code, 0) << base.output;
  ASSERT_EQ(q8.exit_code, 0) << q8.output;
  const double p0 = final_ppl(base.output), p1 = final_ppl(q8.output);
  ASSERT_GT(p0, 0) << base.output;
  ASSERT_GT(p1, 0) << q8.output;
  EXPECT_LT(std::abs(p1 - p0) / p0, 0.01) << "F32 " << p0 << ", Q8_0 " << p1;
}

}  // namespace
}  // namespace chorus
