// tools/main.cpp — `chorus <command>`: dispatches to the subcommands in tools/cmd_*.cpp.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "git_revision.h"  // generated at build time (cmake/git_revision.cmake)
#include "tools/commands.h"
#include "vkdevice/vk.h"

namespace {

void usage(FILE* to) {
  std::fprintf(to,
               "chorus — run GGUF language models on every Vulkan GPU at once\n"
               "\n"
               "usage: chorus <command> [options]\n"
               "\n"
               "commands:\n");
  for (const auto& c : chorus::tools::all_commands()) std::fprintf(to, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(to, "\n`chorus <command> --help` describes one command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    try {
      chorus::tools::flush_stdout();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "chorus: error: %s\n", e.what());
      return 1;
    }
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  if (name == "--version" || name == "version") {
    std::printf("chorus %s (git %s)\n", CHORUS_VERSION, CHORUS_GIT_REVISION);
    return 0;
  }
  // --flag=value is --flag value for every command (a value may itself hold '=').
  std::vector<std::string> args;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos && eq > 2) {
      args.push_back(a.substr(0, eq));
      args.push_back(a.substr(eq + 1));
    } else {
      args.push_back(a);
    }
  }
  for (const auto& c : chorus::tools::all_commands()) {
    if (name != c.name) continue;
    try {
      const int rc = c.run(args);
      chorus::tools::flush_stdout();  // output lost to a full disk or a closed pipe is an error
      return rc;
    } catch (const chorus::tools::UsageError& e) {
      std::fprintf(stderr, "chorus %s: %s\n(see `chorus %s --help`)\n", c.name, e.what(), c.name);
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "chorus %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::string best;
  size_t best_d = 3;
  for (const auto& c : chorus::tools::all_commands())
    if (const size_t d = chorus::tools::edit_distance(name, c.name); d < best_d) best_d = d, best = c.name;
  std::fprintf(stderr, "chorus: unknown command '%s'%s\n\n", name.c_str(),
               best.empty() ? "" : ("; did you mean '" + best + "'?").c_str());
  usage(stderr);
  return 2;
}
