// One model across several logical devices: the same tokens as on one device, for every split.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "engine/model.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

struct SplitCase {
  const char* name;
  split::SplitMode mode;
  std::vector<double> ratios;
  bool force_staging = false;
};

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  int32_t v = 0;
  while (in >> v) ids.push_back(v);
  return ids;
}

class SplitGolden : public test::GpuTestP<SplitCase> {};

TEST_P(SplitGolden, Stories260KGreedy256TokensEqualTheReference) {
  const SplitCase& sc = GetParam();
  const auto want = read_ids(test::shared_model("stories260K.greedy-t0.ids.txt"));
  ASSERT_EQ(want.size(), 256u);
  std::vector<std::unique_ptr<vk::Device>> owned;
  std::vector<vk::Device*> devices;
  for (size_t i = 0; i < sc.ratios.size(); ++i) {
    if (sc.force_staging) {
      vk::DeviceOptions o;
      o.physical_index = test::test_device_index();
      o.force_staging = true;
      owned.push_back(std::make_unique<vk::Device>(test::instance(), o));
      devices.push_back(owned.back().get());
    } else {
      devices.push_back(&test::device(static_cast<int>(i)));
    }
  }
  auto model = Model::load(test::shared_model("stories260K.gguf"), devices, split::SplitRequest{sc.mode, sc.ratios, 0});
  Context ctx(*model, ContextOptions{512, 1, 512});
  std::vector<int32_t> got;
  int32_t token = 1;  // BOS
  for (size_t i = 0; i < want.size(); ++i) {
    const auto logits = ctx.decode(0, std::span(&token, 1));
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(token);
  }
  const auto first = std::mismatch(want.begin(), want.end(), got.begin());
  EXPECT_EQ(got, want) << sc.name << ": first difference at step " << (first.first - want.begin()) << "\n"
                       << split::describe(model->plan());
}

INSTANTIATE_TEST_SUITE_P(
    EverySplit, SplitGolden,
    ::testing::Values(SplitCase{"one_device", split::SplitMode::none, {1}},
                      SplitCase{"tensor_1_1", split::SplitMode::tensor, {1, 1}},
                      SplitCase{"tensor_3_1", split::SplitMode::tensor, {3, 1}},
                      SplitCase{"tensor_1_1_1", split::SplitMode::tensor, {1, 1, 1}},
                      SplitCase{"tensor_5_3_1", split::SplitMode::tensor, {5, 3, 1}},
                      SplitCase{"layer_1_1", split::SplitMode::layer, {1, 1}},
                      SplitCase{"tensor_1_1_staging", split::SplitMode::tensor, {1, 1}, true}),
    [](const ::testing::TestParamInfo<SplitCase>& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace chorus
