// tests/test_kernels.cpp — building pipelines ahead of time (ops::Kernels::prepare) and the
// list of them a run leaves for the next (engine/ops/kernels.h). Runs under TSan in CI
// (scripts/test.sh): prepare's threads build pipelines while the test's thread asks for them.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/ops/kernels.h"
#include "engine/weights.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

using ops::PipelineKey;

std::vector<PipelineKey> parse(const std::string& text, std::string& error) {
  error.clear();
  return ops::parse_pipeline_list(text, error);
}

TEST(PipelineList, RoundTripsEveryField) {
  const std::vector<PipelineKey> keys = {
      {"mul_mv_texel_q4_1", 4, 32, 11, {64, 8, 1, 0, 0, 1, 2}},
      {"rope_store", 5, 48, 0, {}},
      {"attention", 6, 64, 0, {4294967295u, 0}},
  };
  std::string error;
  EXPECT_EQ(parse(ops::format_pipeline_list(keys), error), keys);
  EXPECT_EQ(error, "");
  EXPECT_TRUE(parse(ops::format_pipeline_list({}), error).empty());
  EXPECT_EQ(error, "");
}

TEST(PipelineList, RefusesAnyListChorusDidNotWriteAndNamesTheLine) {
  const std::string head = "chorus pipeline list 1\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "line 1: empty file"},
      {"chorus pipeline list 2\n", "line 1: not a chorus pipeline list"},
      {"\x7f" "ELF\n", "line 1: not a chorus pipeline list"},
      {head + "add 3 16 0 -", "line 2: no newline at the end"},
      {head + "add 3 16 0\n", "line 2: expected 5 fields"},
      {head + "add 3 16 0 - extra\n", "line 2: expected 5 fields"},
      {head + "add  3 16 0 -\n", "line 2: expected 5 fields"},
      {head + "../add 3 16 0 -\n", "line 2: op name"},
      {head + " 3 16 0 -\n", "line 2: op name"},
      {head + std::string(65, 'a') + " 3 16 0 -\n", "line 2: op name"},
      {head + "add 33 16 0 -\n", "line 2: bindings"},
      {head + "add 3 130 0 -\n", "line 2: bindings"},
      {head + "add 3 18 0 -\n", "line 2: bindings"},
      {head + "add 3 16 65536 -\n", "line 2: bindings"},
      {head + "add -3 16 0 -\n", "line 2: bindings"},
      {head + "add 3 16 0 1,,2\n", "line 2: specialisation constants"},
      {head + "add 3 16 0 4294967296\n", "line 2: specialisation constants"},
      {head + "add 3 16 0 1,2,\n", "line 2: specialisation constants"},
      {head + "add 3 16 0 +1\n", "line 2: specialisation constants"},
  };
  for (const auto& [text, expected] : cases) {
    std::string error;
    EXPECT_TRUE(parse(text, error).empty()) << text;
    EXPECT_EQ(error.rfind(expected, 0), 0u) << "for " << text << "\ngot: " << error;
  }
  std::string spec33 = "0";
  for (int i = 0; i < 32; ++i) spec33 += ",0";
  std::string error;
  EXPECT_TRUE(parse(head + "add 3 16 0 " + spec33 + "\n", error).empty());
  EXPECT_NE(error.find("up to 32"), std::string::npos) << error;
  std::string many = head;
  for (size_t i = 0; i <= ops::kMaxListedPipelines; ++i) many += "add 3 16 0 -\n";
  EXPECT_TRUE(parse(many, error).empty());
  EXPECT_NE(error.find("more than 256 pipelines"), std::string::npos) << error;
}

TEST(PipelineList, AMissingFileIsAnEmptyListAndADirectoryIsIgnoredWithAWarning) {
  std::string warning;
  EXPECT_TRUE(ops::read_pipeline_list("/nonexistent/chorus/pipelines.list", warning).empty());
  EXPECT_EQ(warning, "");
  char dir[] = "/tmp/chorus-list-dir-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  EXPECT_TRUE(ops::read_pipeline_list(dir, warning).empty());
  EXPECT_NE(warning.find(dir), std::string::npos) << warning;
  ::rmdir(dir);
}

// The pipelines a real model's prefill and decode build on device 0.
std::vector<PipelineKey> model_pipelines() {
  vk::Device& dev = test::device(0);
  auto model = Model::load(test::shared_model("stories260K.gguf"), dev);
  Context ctx(*model, ContextOptions{64, 1, 64});
  const std::vector<int32_t> prompt = {1, 400, 402, 403};
  (void)ctx.decode(0, prompt);
  const int32_t next = 404;
  (void)ctx.decode(0, std::span(&next, 1));
  return model->impl().shards.at(0).kernels->built();
}

class KernelsPrepare : public test::GpuTest {};

TEST_F(KernelsPrepare, BuildsEveryListedPipelineOnceWhileTheCallerAsksForThem) {
  const std::vector<PipelineKey> keys = model_pipelines();
  ASSERT_GE(keys.size(), 5u);
  vk::Device& dev = test::device(0);
  const uint64_t before = dev.counters().pipelines.load();
  {
    ops::Kernels k(dev);
    EXPECT_EQ(k.prepare(keys, 2), keys.size());
    // The caller asks for every one (last first) while the threads build them in list order:
    // each is built once, by whichever gets to it, and the caller waits for queued ones.
    for (auto it = keys.rbegin(); it != keys.rend(); ++it)
      EXPECT_NE(k.pipeline(it->op, it->n_bindings, it->push_bytes, it->spec, it->texel_bindings).handle(), VK_NULL_HANDLE);
    double ms = -1;
    EXPECT_EQ(k.wait_prepared(&ms), keys.size());
    EXPECT_GE(ms, 0.0);
    EXPECT_EQ(dev.counters().pipelines.load() - before, keys.size());
    std::vector<PipelineKey> built = k.built(), expected = keys;
    const auto by_text = [](const PipelineKey& a, const PipelineKey& b) {
      return ops::format_pipeline_list({&a, 1}) < ops::format_pipeline_list({&b, 1});
    };
    std::sort(built.begin(), built.end(), by_text);
    std::sort(expected.begin(), expected.end(), by_text);
    EXPECT_EQ(built, expected);
  }
}

TEST_F(KernelsPrepare, SkipsUnknownOpsAndRepeatsAndWhatIsBuiltAlready) {
  std::vector<PipelineKey> keys = model_pipelines();
  ASSERT_GE(keys.size(), 2u);
  vk::Device& dev = test::device(0);
  ops::Kernels k(dev);
  const PipelineKey& first = keys.front();
  (void)k.pipeline(first.op, first.n_bindings, first.push_bytes, first.spec, first.texel_bindings);
  std::vector<PipelineKey> list = keys;
  list.push_back(keys.back());                          // a repeat
  list.push_back(PipelineKey{"no_such_op", 3, 16, 0, {}});  // an op this build does not have
  EXPECT_EQ(k.prepare(list, 3), keys.size() - 1);
  EXPECT_EQ(k.wait_prepared(), keys.size() - 1);
  EXPECT_EQ(k.built().size(), keys.size());
  EXPECT_THROW(k.prepare(list, 1), std::logic_error);
}

// A list written by another build of chorus may name an op with other push constants or
// bindings: what it builds must not stand in for the pipeline asked for (that failed with
// "takes 56 bytes of push constants, 60 were given" after AttentionPush grew).
TEST_F(KernelsPrepare, AListedPipelineWithAnotherLayoutIsNotTheOneAskedFor) {
  const std::vector<PipelineKey> keys = model_pipelines();
  ASSERT_FALSE(keys.empty());
  const PipelineKey& real = keys.front();
  PipelineKey stale = real;
  stale.push_bytes += 4;
  PipelineKey more = real;  // (a layout may declare more than the shader uses, not less)
  more.n_bindings += 1;
  vk::Device& dev = test::device(0);
  ops::Kernels k(dev);
  const std::vector<PipelineKey> list = {stale, more};
  EXPECT_EQ(k.prepare(list, 2), 2u);
  EXPECT_EQ(k.wait_prepared(), 2u);
  const vk::Pipeline& p = k.pipeline(real.op, real.n_bindings, real.push_bytes, real.spec, real.texel_bindings);
  EXPECT_EQ(p.push_bytes(), real.push_bytes);
  EXPECT_EQ(p.n_bindings(), real.n_bindings);
  EXPECT_EQ(k.built().size(), 3u);  // the two listed, then the one asked for
}

TEST_F(KernelsPrepare, DestroyingKernelsWhileItsThreadsBuildStopsThem) {
  const std::vector<PipelineKey> keys = model_pipelines();
  vk::Device& dev = test::device(0);
  for (int round = 0; round < 3; ++round) {
    ops::Kernels k(dev);
    EXPECT_EQ(k.prepare(keys, 2), keys.size());
  }  // each destructor joins threads that may be mid-build
  SUCCEED();
}

}  // namespace
}  // namespace chorus
