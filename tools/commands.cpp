#include "tools/commands.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "vkdevice/env.h"
#include "vkdevice/file_type.h"

namespace chorus::tools {

std::span<const Command> all_commands() {
  static const Command table[] = {
      {"devices", "list every Vulkan device, its capabilities, and why any is not used", cmd_devices},
      {"selftest", "check the matrix kernels of every weight format on each device against the CPU reference", cmd_selftest},
      {"bench", "measure kernel throughput against this machine's memory bandwidth", cmd_bench},
      {"inspect", "print a GGUF file's metadata and tensor table", cmd_inspect},
      {"tokenize", "print the token ids of a text (llama-tokenize style)", cmd_tokenize},
      {"chat", "talk to a model in its own chat format (interactive)", cmd_chat},
      {"run", "generate text from a prompt (the completion on stdout)", cmd_run},
      {"fit", "plan a model on the devices without loading it: bytes per device, split, context", cmd_fit},
      {"quantize", "write a model in another weight format (Q8_0, Q4_K_M, F16 ...: llama.cpp's type mixes)", cmd_quantize},
      {"perplexity", "measure a model's perplexity over a text file (llama-perplexity's method)", cmd_perplexity},
      {"serve", "an OpenAI-compatible HTTP server with parallel slots (chat, completions, embeddings)", cmd_serve},
  };
  return table;
}

uint64_t parse_uint(const std::string& flag, const std::string& text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
    throw UsageError(flag + " expects a non-negative integer, got '" + text + "'");
  if (const auto v = vk::parse_decimal(text, 0, UINT64_MAX)) return *v;
  throw UsageError(flag + " value '" + text + "' is too large");
}

int64_t parse_int(const std::string& flag, const std::string& text, int64_t min, int64_t max) {
  const bool negative = !text.empty() && text[0] == '-';
  const auto magnitude = vk::parse_decimal(negative ? std::string_view(text).substr(1) : std::string_view(text), 0,
                                           static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  const int64_t v = magnitude ? (negative ? -static_cast<int64_t>(*magnitude) : static_cast<int64_t>(*magnitude)) : 0;
  if (!magnitude || v < min || v > max)
    throw UsageError(flag + " expects an integer from " + std::to_string(min) + " to " + std::to_string(max) + ", got '" +
                     text + "'");
  return v;
}

double parse_number(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double v = text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ? 0 : std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || errno == ERANGE)
    throw UsageError(flag + " expects a finite number, got '" + text + "'");
  return v;
}

std::vector<std::string> split_list(const std::string& flag, const std::string& text, const char* example) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = std::min(text.find(',', start), text.size());
    out.push_back(text.substr(start, comma - start));
    if (out.back().empty())
      throw UsageError(flag + " expects a comma-separated list such as " + example + ", got '" + text + "'");
    if (comma == text.size()) return out;
    start = comma + 1;
  }
}

std::vector<uint32_t> parse_index_list(const std::string& flag, const std::string& text) {
  std::vector<uint32_t> out;
  for (const std::string& item : split_list(flag, text, "0,0,1")) {
    const uint64_t v = parse_uint(flag, item);
    if (v > std::numeric_limits<uint32_t>::max()) throw UsageError(flag + " index '" + item + "' is too large");
    out.push_back(static_cast<uint32_t>(v));
  }
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

namespace {

constexpr uint64_t kMaxTextBytes = 1ull << 30;

struct OwnedFd {
  int fd = -1;
  bool owned = false;
  ~OwnedFd() {
    if (owned && fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string read_text_input(const std::string& flag, const std::string& path) {
  const std::string where = flag + " " + (path == "-" ? std::string("- (standard input)") : path);
  OwnedFd in;
  if (path == "-") {
    in.fd = STDIN_FILENO;
  } else {
    // O_NONBLOCK: opening a FIFO without a writer returns at once instead of blocking.
    in.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (in.fd < 0) throw std::runtime_error(where + ": cannot open: " + std::strerror(errno));
    in.owned = true;
  }
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) throw std::runtime_error(where + ": cannot stat: " + std::strerror(errno));
  const bool regular = S_ISREG(st.st_mode), fifo = S_ISFIFO(st.st_mode);
  if (in.owned && !regular && !fifo)
    throw std::runtime_error(where + ": " + describe_file_type(st.st_mode) + ", expected a text file or a pipe");
  if (regular && static_cast<uint64_t>(st.st_size) > kMaxTextBytes)
    throw std::runtime_error(where + ": " + std::to_string(st.st_size) + " bytes, more than the " +
                             std::to_string(kMaxTextBytes) + " bytes chorus reads as text");
  std::string text;
  std::array<char, 1 << 16> buf{};
  if (in.owned && fifo) {
    // A FIFO in the file system (not a /dev/fd/N symlink to a pipe) whose first non-blocking
    // read says end-of-file has no writer: nothing will ever arrive.
    struct stat link {};
    const bool named = ::lstat(path.c_str(), &link) == 0 && S_ISFIFO(link.st_mode);
    const ssize_t n = ::read(in.fd, buf.data(), buf.size());
    if (n == 0 && named)
      throw std::runtime_error(where + ": a FIFO (named pipe) with no writer, so there is nothing to read; start the "
                               "program that writes it first, or pass its output as -f <(command)");
    if (n > 0) text.append(buf.data(), static_cast<size_t>(n));
  }
  if (in.owned) ::fcntl(in.fd, F_SETFL, ::fcntl(in.fd, F_GETFL) & ~O_NONBLOCK);  // from here on, wait for data
  while (true) {
    const ssize_t n = ::read(in.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(where + ": cannot read: " + std::strerror(errno));
    if (n == 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
    if (text.size() > kMaxTextBytes)
      throw std::runtime_error(where + ": more than the " + std::to_string(kMaxTextBytes) + " bytes chorus reads as text");
  }
  return text;
}

void flush_stdout() {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return;
  const int err = errno;
  std::clearerr(stdout);
  throw std::runtime_error(std::string("write error on standard output: ") + std::strerror(err ? err : EIO));
}

namespace {

// The one piece of process-wide mutable state in chorus: a signal handler can reach nothing
// else. Lock-free, so setting it is async-signal-safe.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_interrupt(int) {
  if (g_interrupted.exchange(true)) _exit(kInterruptedExit);  // the second Ctrl-C: quit now
  static const char msg[] =
      "\nchorus: interrupted; stopping at the next token or chunk (press Ctrl-C again to quit at once)\n";
  const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and writes resume; the flag is checked between steps
  ::sigaction(SIGINT, &sa, nullptr);
}

const std::atomic<bool>& interrupt_flag() { return g_interrupted; }

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace chorus::tools
