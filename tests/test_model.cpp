// The forward pass on real models, on one device.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/model.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

using test::GpuTest;

std::string shared_model(const std::string& name) {
  const std::string path = std::string(CHORUS_SOURCE_DIR) + "/../shared/models/" + name;
  if (!std::filesystem::exists(path))
    ADD_FAILURE() << path << " is missing: the tests need ../shared (beside the repository) with its models/ folder";
  return path;
}

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  int32_t v = 0;
  while (in >> v) ids.push_back(v);
  return ids;
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TEST_F(GpuTest, Stories260KGreedyFromBosReproducesTheDocumented256Tokens) {
  const auto want = read_ids(shared_model("stories260K.greedy-t0.ids.txt"));
  ASSERT_EQ(want.size(), 256u);
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context ctx(*model, ContextOptions{512, 1, 512});
  std::vector<int32_t> got;
  int32_t token = 1;  // BOS
  for (size_t i = 0; i < want.size(); ++i) {
    const auto logits = ctx.decode(0, std::span(&token, 1));
    token = argmax(logits);
    got.push_back(token);
    if (got.back() != want[i]) break;
  }
  const auto first = std::mismatch(want.begin(), want.end(), got.begin(), got.end());
  EXPECT_EQ(got, want) << "first difference at step " << (first.first - want.begin());
}

TEST_F(GpuTest, PrefillInMicroBatchesGivesTheSameLogitsAsOneTokenAtATime) {
  const auto ids = read_ids(shared_model("stories260K.greedy-t0.ids.txt"));
  std::vector<int32_t> prompt{1};
  prompt.insert(prompt.end(), ids.begin(), ids.begin() + 40);
  auto model = Model::load(shared_model("stories260K.gguf"), test::device(0));
  Context stepwise(*model, ContextOptions{128, 1, 512});
  std::vector<float> want;
  for (int32_t t : prompt) {
    const auto l = stepwise.decode(0, std::span(&t, 1));
    want.insert(want.end(), l.begin(), l.end());
  }
  for (uint32_t ubatch : {7u, 16u, 512u}) {
    Context batched(*model, ContextOptions{128, 1, ubatch});
    const auto got = batched.decode(0, prompt, true);
    EXPECT_LE(test::nmse(want, got), 1e-9) << "n_ubatch " << ubatch;
  }
}

}  // namespace
}  // namespace chorus
