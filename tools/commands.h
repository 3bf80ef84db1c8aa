// tools/commands.h — the table of `chorus` subcommands and the small argument helpers
// they share.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace chorus::tools {

// A mistake on the command line: printed with a pointer to --help, exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

std::span<const Command> all_commands();

int cmd_devices(const std::vector<std::string>& args);
int cmd_selftest(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int bench_model(const std::vector<std::string>& args);       // `chorus bench -m MODEL`
int bench_collective(const std::vector<std::string>& args);  // `chorus bench collective`
int cmd_inspect(const std::vector<std::string>& args);
int cmd_tokenize(const std::vector<std::string>& args);
int cmd_run(const std::vector<std::string>& args);
int cmd_perplexity(const std::vector<std::string>& args);

// Argument helpers: value of `--flag V` at args[i+1] (advances i) or a UsageError.
std::string take_value(const std::vector<std::string>& args, size_t& i);
uint64_t parse_uint(const std::string& flag, const std::string& text);
// "1,1,2" -> {1,1,2}
std::vector<uint32_t> parse_index_list(const std::string& flag, const std::string& text);
// Parses a size such as "512M", "2G", "1048576".
uint64_t parse_bytes(const std::string& flag, const std::string& text);

}  // namespace chorus::tools
