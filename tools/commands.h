// tools/commands.h — the table of `chorus` subcommands and the small argument helpers
// they share.
#pragma once

#include <atomic>
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

// Levenshtein distance, for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b);

int cmd_devices(const std::vector<std::string>& args);
int cmd_selftest(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int bench_model(const std::vector<std::string>& args);
// Host memcpy bandwidth in bytes copied per second (median of at least 3 copies of 256 MiB):
// the roofline `chorus bench` and `chorus bench kernels` compare weight reads with.
double memcpy_bandwidth(uint32_t reps);       // `chorus bench -m MODEL`
int bench_collective(const std::vector<std::string>& args);  // `chorus bench collective`
int cmd_inspect(const std::vector<std::string>& args);
int cmd_tokenize(const std::vector<std::string>& args);
int cmd_run(const std::vector<std::string>& args);
int cmd_chat(const std::vector<std::string>& args);  // also `chorus run -cnv`
int cmd_perplexity(const std::vector<std::string>& args);
int cmd_quantize(const std::vector<std::string>& args);
int cmd_fit(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);  // the HTTP server (server/)

// Argument helpers for the options' values (tools/cli.h declares the options themselves).
// Every number on the command line is parsed strictly: no sign (unless allowed), no spaces,
// no trailing text, no overflow; a UsageError names the flag and what it expects.
uint64_t parse_uint(const std::string& flag, const std::string& text);
// An integer in [min, max] (may be negative); the error states the range.
int64_t parse_int(const std::string& flag, const std::string& text, int64_t min, int64_t max);
// A finite decimal number such as 0.8, 1e-3 or -2 (no leading spaces, "inf" or "nan").
double parse_number(const std::string& flag, const std::string& text);
// "a,b,c" -> {"a","b","c"}; an empty list or an empty item ("0," ",1" "0,,1") is a UsageError
// naming the flag and showing `example`.
std::vector<std::string> split_list(const std::string& flag, const std::string& text, const char* example);
// "1,1,2" -> {1,1,2}
std::vector<uint32_t> parse_index_list(const std::string& flag, const std::string& text);
// Parses a size such as "512M", "2G", "1048576".
uint64_t parse_bytes(const std::string& flag, const std::string& text);

// The text behind `-f PATH` (flag names the option for messages): "-" is standard input; a
// regular file (at most 1 GiB) or a pipe the user passes on purpose (`-f <(command)`, a FIFO
// with its writer already running) is read to the end. A directory, a device, or a FIFO in
// the file system with no writer is refused at once with the path and what it is, never a
// hang.
std::string read_text_input(const std::string& flag, const std::string& path);

// Flushes stdout; a write error (a full disk, /dev/full, a closed pipe) throws
// std::runtime_error "write error on standard output: <reason>" (as coreutils do, a command
// whose output was lost must not exit 0). Every streaming path calls it after each piece, and
// main() once at the end.
void flush_stdout();

// Ctrl-C for the long-running commands (run, perplexity, bench). The first SIGINT sets a
// flag the command checks at its next token, chunk or measurement boundary: it then prints
// what it has done and exits with kInterruptedExit, releasing the devices on the way out. A
// second SIGINT exits at once (_exit(130)).
void install_interrupt_handler();
const std::atomic<bool>& interrupt_flag();
inline bool interrupted() { return interrupt_flag().load(); }
inline constexpr int kInterruptedExit = 130;  // 128 + SIGINT, as shells report it

}  // namespace chorus::tools
