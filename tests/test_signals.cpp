// Ctrl-C through the real binary: `chorus run`, `perplexity` and `bench` stop at the next token,
// chunk or measurement boundary, report what they did and exit 130; a second Ctrl-C exits at
// once. Nothing here depends on how long anything takes: the child's stdout is a pipe the test
// fills to the brim before starting it, so the child blocks on its first result until the test
// has sent the signal and starts reading; it cannot finish early, and the signal always arrives
// after the handler is installed (the test waits for a stderr line printed after that).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/gpu.h"

extern char** environ;

namespace {

const std::string kShared = chorus::test::shared_dir() + "/";
const std::string kStories = kShared + "models/stories260K.gguf";
const std::string kText = kShared + "corpus/tinystories-valid-excerpt.txt";

class Child {
 public:
  // Starts `chorus args...` with stdout on a full pipe and stderr on another pipe.
  explicit Child(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (::pipe(out) != 0 || ::pipe(err) != 0) return;
    ::fcntl(out[1], F_SETPIPE_SZ, 4096);
    // Fill the stdout pipe: the child's first write then blocks until we read.
    ::fcntl(out[1], F_SETFL, O_NONBLOCK);
    const std::string filler(4096, '#');
    while (::write(out[1], filler.data(), filler.size()) > 0 || errno == EINTR) {
    }
    while (::write(out[1], filler.data(), 1) > 0) {
    }
    ::fcntl(out[1], F_SETFL, 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    std::vector<std::string> argv_s{CHORUS_BINARY};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, CHORUS_BINARY, &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    if (err_ >= 0) ::close(err_);
  }

  bool started() const { return pid_ > 0; }
  // Reads stderr until `marker` appears (or stderr ends); whether it appeared.
  bool wait_for_stderr(const std::string& marker) {
    char buf[4096];
    while (err_text.find(marker) == std::string::npos) {
      const ssize_t n = ::read(err_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      err_text.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  void interrupt() { ::kill(pid_, SIGINT); }
  // Reads both pipes to their end (stdout without the filler) and returns the exit code, or
  // -1 if the child was killed by a signal.
  int finish() {
    pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    std::string raw_out;
    char buf[4096];
    int open = 2;
    while (open > 0) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (auto& f : fds) {
        if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const ssize_t n = ::read(f.fd, buf, sizeof buf);
        if (n <= 0) {
          f.fd = -1;
          --open;
          continue;
        }
        (f.fd == out_ ? raw_out : err_text).append(buf, static_cast<size_t>(n));
      }
    }
    out_text = raw_out.substr(raw_out.find_first_not_of('#') == std::string::npos ? raw_out.size()
                                                                                   : raw_out.find_first_not_of('#'));
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string out_text, err_text;

 private:
  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool reaped_ = false;
};

std::vector<std::string> with_device(std::vector<std::string> args) {
  if (const char* d = std::getenv("CHORUS_TEST_DEVICE")) {
    args.push_back("--device");
    args.push_back(d);
  }
  return args;
}

TEST(CtrlC, RunStopsAtTheNextTokenPrintsTimingsAndExits130) {
  Child c(with_device({"run", "-m", kStories, "-n", "400", "--temp", "0", "--ignore-eos", "--print-ids"}));
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.wait_for_stderr("prompt:")) << c.err_text;  // generation starts after this line
  c.interrupt();
  EXPECT_EQ(c.finish(), 130) << c.err_text;
  EXPECT_NE(c.err_text.find("stopped at an interrupt (Ctrl-C)"), std::string::npos) << c.err_text;
  EXPECT_NE(c.err_text.find("generation"), std::string::npos) << c.err_text;
  // The first token was written when the signal came; generation stopped right after it.
  EXPECT_FALSE(c.out_text.empty());
  EXPECT_EQ(c.out_text.find(' '), std::string::npos) << "more than one token: " << c.out_text;
}

TEST(CtrlC, PerplexityStopsAfterTheChunkInFlightAndReportsTheEstimateSoFar) {
  Child c(with_device({"perplexity", "-m", kStories, "-f", kText, "-c", "128", "-b", "128"}));
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.wait_for_stderr("calculating perplexity over")) << c.err_text;
  c.interrupt();
  EXPECT_EQ(c.finish(), 130) << c.err_text;
  EXPECT_EQ(c.out_text.rfind("[1]", 0), 0u) << c.out_text;
  EXPECT_EQ(c.out_text.find("[2]"), std::string::npos) << c.out_text;
  EXPECT_NE(c.out_text.find("Final estimate: PPL = "), std::string::npos) << c.out_text;
  EXPECT_NE(c.err_text.find("interrupted (Ctrl-C): the estimate covers the first 1 of"), std::string::npos) << c.err_text;
}

TEST(CtrlC, BenchStopsBetweenRunsAndSaysSo) {
  Child c(with_device({"bench", "-m", kStories, "-p", "16", "-n", "16", "-r", "2"}));
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.wait_for_stderr("KV cache")) << c.err_text;  // the memory line, before any run
  c.interrupt();
  EXPECT_EQ(c.finish(), 130) << c.err_text;
  EXPECT_NE(c.err_text.find("bench: interrupted (Ctrl-C)"), std::string::npos) << c.err_text;
  EXPECT_EQ(c.out_text.find("tg16"), std::string::npos) << "generation was measured after Ctrl-C:\n" << c.out_text;
}

TEST(CtrlC, ASecondInterruptExitsAtOnceWithoutTheReport) {
  Child c(with_device({"run", "-m", kStories, "-n", "400", "--temp", "0", "--ignore-eos", "--print-ids"}));
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.wait_for_stderr("prompt:")) << c.err_text;
  c.interrupt();
  ASSERT_TRUE(c.wait_for_stderr("press Ctrl-C again")) << c.err_text;  // the first was handled
  c.interrupt();  // the child is still blocked writing its first token
  EXPECT_EQ(c.finish(), 130) << c.err_text;
  EXPECT_EQ(c.err_text.find("stopped at"), std::string::npos) << c.err_text;
}

// serve opens its devices before its HTTP threads start: opening lavapipe's logical devices of a
// tensor split sets LP_NUM_THREADS for a moment (vk::InstanceOptions::cpu_threads), which is not
// safe while other threads may read the environment. After loading, Ctrl-C stops it with 0.
TEST(CtrlC, ServeOpensItsDevicesBeforeItListensAndStopsWithZeroOnceLoaded) {
  const char* d = std::getenv("CHORUS_TEST_DEVICE");
  const std::string dev = d ? d : "0";
  Child c({"serve", "-m", kStories, "--port", "0", "-c", "256", "--device", dev + "," + dev, "-sm", "tensor"});
  ASSERT_TRUE(c.started());
  ASSERT_TRUE(c.wait_for_stderr("serve: ready")) << c.err_text;
  const size_t listening = c.err_text.find("serve: listening");
  ASSERT_NE(listening, std::string::npos) << c.err_text;
  const size_t second_device = c.err_text.find("device: device 0/1");
  ASSERT_NE(second_device, std::string::npos) << c.err_text;
  EXPECT_LT(second_device, listening) << "the devices were opened after the server's threads started:\n" << c.err_text;
  c.interrupt();
  EXPECT_EQ(c.finish(), 0) << c.err_text;
  EXPECT_NE(c.err_text.find("serve: interrupted: stopping"), std::string::npos) << c.err_text;
}

}  // namespace
