// `chorus chat` in a real terminal (a tmux pane: a pty, line editing by libedit, real Ctrl-C
// and Ctrl-D keystrokes): a two-turn conversation with SmolLM2-135M-Instruct at temperature 0
// whose second answer depends on the first, Ctrl-C while a reply streams, /clear, Ctrl-D.
// Every wait polls the screen for what must appear, with a generous deadline that only guards
// against a hang; nothing depends on how fast the machine is. Ctrl-C lands mid-reply on any
// machine because CHORUS_FAULT_HOLD_REPLY holds each reply after its first piece until Ctrl-C.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "tests/gpu.h"

namespace chorus {
namespace {

std::string sh(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ChatTerminal : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sh("command -v tmux").empty()) GTEST_FAIL() << "tmux is needed (apt-get install tmux; scripts/install-deps.sh does)";
    dir_ = std::filesystem::temp_directory_path() / ("chorus-chat-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    session_ = "chorus-chat-" + std::to_string(::getpid());
  }
  void TearDown() override {
    stop();
    std::filesystem::remove_all(dir_);
  }
  // "tmux -L SOCKET": every start() has a tmux server of its own, so a new pane never meets the
  // previous server while it is still shutting down (the last session's end stops a server).
  std::string tmux() const { return "tmux -L " + session_ + "-" + std::to_string(starts_); }
  // Runs `cmd` (no single quotes in it) in a new 200x60 tmux pane.
  void start(const std::string& cmd) {
    ASSERT_EQ(cmd.find('\''), std::string::npos);
    ++starts_;
    ASSERT_EQ(std::system((tmux() + " new-session -d -x 200 -y 60 -s " + session_ + " '" + cmd + "'").c_str()), 0);
  }
  void stop() const { sh(tmux() + " kill-server 2>/dev/null"); }
  std::string screen() const { return sh(tmux() + " capture-pane -p -J -S -200 -t " + session_ + " 2>/dev/null"); }
  std::string err() const { return read_file((dir_ / "stderr.txt").string()); }
  void keys(const std::string& k) const { sh(tmux() + " send-keys -t " + session_ + " " + k); }
  void type(const std::string& line) const { keys("-l '" + line + "'"); keys("Enter"); }
  // Polls until `done` holds; fails after the deadline (a hang guard, not a speed requirement).
  bool wait_for(const std::function<bool()>& done, const char* what) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "gave up waiting for " << what << "\nscreen:\n" << screen() << "\nstderr:\n" << err();
    return false;
  }
  size_t count(const std::string& s, const std::string& what) const {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  }
  // Whether the chat is waiting at its "> " prompt with nothing typed: the line editor is then
  // reading and in its own terminal mode. Typing before that would race with the mode switch
  // (which may discard input typed ahead), so every line and key at the prompt waits for it.
  bool at_prompt() const {
    std::string s = screen();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    const size_t nl = s.rfind('\n');
    return s.substr(nl == std::string::npos ? 0 : nl + 1) == ">";
  }
  bool type_at_prompt(const std::string& line) const {
    if (!wait_for([&] { return at_prompt(); }, ("the prompt, to type '" + line + "'").c_str())) return false;
    type(line);
    return true;
  }
  bool keys_at_prompt(const std::string& k) const {
    if (!wait_for([&] { return at_prompt(); }, ("the prompt, to press " + k).c_str())) return false;
    keys(k);
    return true;
  }
  // The number of "[ prompt: ..." lines (one per finished reply) on stderr.
  size_t replies() const { return count(err(), "[ prompt:"); }

  std::filesystem::path dir_;
  std::string session_;
  int starts_ = 0;
};

TEST_F(ChatTerminal, TwoTurnsThatBuildOnEachOtherCtrlCMidReplyClearAndCtrlD) {
  const std::string model = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  const std::string cmd = "CHORUS_FAULT_HOLD_REPLY=1 " + std::string(CHORUS_BINARY) + " chat -m " + model +
                          " --temp 0 -n 60 -c 1024 2>" + (dir_ / "stderr.txt").string() + "; echo \"[exit $?]\"; sleep 600";
  start(cmd);
  ASSERT_TRUE(wait_for([&] { return err().find("/exit, /clear") != std::string::npos && screen().find("> ") != std::string::npos; },
                       "the first prompt"));

  // The reply is held after its first piece until Ctrl-C, which stops it there; the chat goes
  // on. (The two real turns below run in a second chat, without the hold.)
  ASSERT_TRUE(type_at_prompt("Write a long story about a dragon."));
  ASSERT_TRUE(wait_for([&] { return screen().find("dragon.\n") != std::string::npos &&
                                    screen().substr(screen().find("dragon.\n") + 8).find_first_not_of(" \n") != std::string::npos; },
                       "the first piece of the story"));
  keys("C-c");
  ASSERT_TRUE(wait_for([&] { return replies() == 1; }, "the stopped reply's statistics"));
  EXPECT_EQ(screen().find("[exit"), std::string::npos) << "Ctrl-C during a reply must not end the chat";
  ASSERT_TRUE(type_at_prompt("/clear"));
  ASSERT_TRUE(wait_for([&] { return err().find("[ conversation cleared ]") != std::string::npos; }, "/clear"));
  ASSERT_TRUE(keys_at_prompt("C-d"));
  ASSERT_TRUE(wait_for([&] { return screen().find("[exit 0]") != std::string::npos; }, "the exit after Ctrl-D"));
  EXPECT_NE(err().find("generation:"), std::string::npos) << "the timings at exit\n" << err();
  stop();

  // Two turns at temperature 0: the second question only makes sense with the first answer.
  const std::string cmd2 = std::string(CHORUS_BINARY) + " chat -m " + model + " --temp 0 -n 60 -c 1024 2>" +
                           (dir_ / "stderr.txt").string() + "; echo \"[exit $?]\"; sleep 600";
  start(cmd2);
  ASSERT_TRUE(wait_for([&] { return err().find("/exit, /clear") != std::string::npos; }, "the second chat's prompt"));
  ASSERT_TRUE(type_at_prompt("What is the capital of France?"));
  ASSERT_TRUE(wait_for([&] { return replies() == 1; }, "the first answer"));
  const std::string first = screen();
  EXPECT_NE(first.find("The capital of France is Paris."), std::string::npos) << first;
  ASSERT_TRUE(type_at_prompt("What is a famous tower in that city?"));
  ASSERT_TRUE(wait_for([&] { return replies() == 2; }, "the second answer"));
  const std::string all = screen();
  const size_t q2 = all.find("What is a famous tower in that city?");
  ASSERT_NE(q2, std::string::npos) << all;
  EXPECT_NE(all.find("Paris", q2), std::string::npos) << "the second answer builds on the first:\n" << all;
  ASSERT_TRUE(keys_at_prompt("C-c"));  // Ctrl-C at the prompt leaves, with the timings
  ASSERT_TRUE(wait_for([&] { return screen().find("[exit 0]") != std::string::npos; }, "the exit after Ctrl-C at the prompt"));
  EXPECT_NE(err().find("generation:"), std::string::npos) << err();
}

}  // namespace
}  // namespace chorus
