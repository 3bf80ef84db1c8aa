// libFuzzer harness for the pipeline list (engine/ops/pipeline_list.cpp), a file read from the
// user's cache folder: any bytes either parse or give an error naming a line; a list that
// parses formats back to text that parses to the same list.
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/ops/pipeline_list.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto keys = chorus::ops::parse_pipeline_list(text, error);
  if (!error.empty()) {
    if (!keys.empty() || error.rfind("line ", 0) != 0) __builtin_trap();
    return 0;
  }
  if (keys.size() > chorus::ops::kMaxListedPipelines) __builtin_trap();
  std::string again;
  if (chorus::ops::parse_pipeline_list(chorus::ops::format_pipeline_list(keys), again) != keys || !again.empty())
    __builtin_trap();
  return 0;
}
