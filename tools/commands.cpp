#include "tools/commands.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <sstream>

namespace chorus::tools {

std::span<const Command> all_commands() {
  static const Command table[] = {
      {"devices", "list every Vulkan device, its capabilities, and why any is not used", cmd_devices},
      {"selftest", "check the matrix kernels of every weight format on each device against the CPU reference", cmd_selftest},
      {"bench", "measure kernel throughput against this machine's memory bandwidth", cmd_bench},
      {"inspect", "print a GGUF file's metadata and tensor table", cmd_inspect},
      {"tokenize", "print the token ids of a text (llama-tokenize style)", cmd_tokenize},
      {"run", "generate text from a prompt (the completion on stdout)", cmd_run},
      {"perplexity", "measure a model's perplexity over a text file (llama-perplexity's method)", cmd_perplexity},
  };
  return table;
}

std::string take_value(const std::vector<std::string>& args, size_t& i) {
  if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
  return args[++i];
}

uint64_t parse_uint(const std::string& flag, const std::string& text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
    throw UsageError(flag + " expects a non-negative integer, got '" + text + "'");
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    throw UsageError(flag + " value '" + text + "' is too large");
  }
}

std::vector<uint32_t> parse_index_list(const std::string& flag, const std::string& text) {
  std::vector<uint32_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const uint64_t v = parse_uint(flag, item);
    if (v > std::numeric_limits<uint32_t>::max()) throw UsageError(flag + " index '" + item + "' is too large");
    out.push_back(static_cast<uint32_t>(v));
  }
  if (out.empty()) throw UsageError(flag + " expects a comma-separated list such as 0,0,1");
  return out;
}

uint64_t parse_bytes(const std::string& flag, const std::string& text) {
  if (text.empty()) throw UsageError(flag + " expects a size such as 512M or 2G");
  uint64_t mult = 1;
  std::string digits = text;
  switch (std::toupper(static_cast<unsigned char>(text.back()))) {
    case 'K': mult = 1ull << 10; digits.pop_back(); break;
    case 'M': mult = 1ull << 20; digits.pop_back(); break;
    case 'G': mult = 1ull << 30; digits.pop_back(); break;
    default: break;
  }
  const uint64_t v = parse_uint(flag, digits);
  if (v > std::numeric_limits<uint64_t>::max() / mult) throw UsageError(flag + " size '" + text + "' is too large");
  return v * mult;
}

}  // namespace chorus::tools
