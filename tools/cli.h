// tools/cli.h — the command-line parser every `chorus` subcommand uses.
//
// A command declares its options once (names, value name, help, what to do with the value);
// parsing, `--help`, "unknown option ... did you mean" and the checks for a missing value all
// come from that one list. llama.cpp's spellings work as they are: several names per option,
// single-dash long names (-ngl, -cnv, -ts), `--flag value` and `--flag=value` (main.cpp splits
// the latter before a command sees it).
#pragma once

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace chorus::tools::cli {

class Parser {
 public:
  // `usage`: the "usage: chorus ..." line(s); `about`: what the command does (a paragraph,
  // printed as given).
  Parser(std::string usage, std::string about);

  // Starts a titled group of options in the help ("sampling:"); options before the first
  // section are listed under "options:".
  Parser& section(std::string title);

  // A switch. `on` runs each time it appears.
  Parser& flag(std::initializer_list<const char*> names, std::string help, std::function<void()> on);
  Parser& flag(std::initializer_list<const char*> names, std::string help, bool& target);

  // An option taking one value (the next argument, whatever it starts with). `on` gets the
  // spelling used (for messages) and the value; it throws UsageError for a bad value.
  Parser& option(std::initializer_list<const char*> names, std::string value_name, std::string help,
                 std::function<void(const std::string& flag, const std::string& value)> on);
  Parser& option(std::initializer_list<const char*> names, std::string value_name, std::string help,
                 std::string& target);

  // Arguments that are not options, in order. `on` gets each; it throws UsageError if there
  // are too many. Without a positional, any non-option argument is an error. An empty `help`
  // keeps it out of the help (a command that only explains where such text belongs).
  Parser& positional(std::string value_name, std::string help, std::function<void(const std::string&)> on);

  // Text printed after the options (examples, notes).
  Parser& epilog(std::string text);

  // Parses `args`. Returns false when -h/--help was given: the help is printed on stdout and
  // the command should return 0. Throws UsageError for an unknown option (naming the closest
  // known one), a missing value, or what an option's `on` refuses.
  bool parse(const std::vector<std::string>& args) const;

  std::string help() const;

 private:
  struct Entry {
    std::vector<std::string> names;
    std::string value_name;  // empty: a switch
    std::string help;
    std::function<void()> on_flag;
    std::function<void(const std::string&, const std::string&)> on_value;
    std::string section;  // non-empty: a heading printed before this entry
  };
  Parser& add(std::initializer_list<const char*> names, Entry e);
  const Entry* find(const std::string& name) const;
  std::string suggestion(const std::string& given) const;

  std::string usage_, about_, epilog_;
  std::vector<Entry> entries_;
  std::string pending_section_;
  std::string positional_name_, positional_help_;
  std::function<void(const std::string&)> on_positional_;
};

}  // namespace chorus::tools::cli
