#include "tools/cli.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <stdexcept>
#include <utility>

#include "tools/commands.h"

namespace chorus::tools::cli {
namespace {

constexpr size_t kHelpColumn = 26;  // where an option's description starts
constexpr size_t kWidth = 100;      // help lines are wrapped to this many columns

// Appends `text` word-wrapped to kWidth, every line after the first indented to `indent`;
// explicit newlines in `text` start new lines.
void wrap(std::string& out, const std::string& text, size_t indent, size_t column) {
  size_t start = 0;
  bool first_line = true;
  while (start <= text.size()) {
    const size_t nl = std::min(text.find('\n', start), text.size());
    const std::string line = text.substr(start, nl - start);
    if (!first_line) {
      out += '\n';
      out.append(indent, ' ');
      column = indent;
    }
    first_line = false;
    size_t i = 0;
    bool line_start = true;
    while (i < line.size()) {
      const size_t space = std::min(line.find(' ', i), line.size());
      const std::string word = line.substr(i, space - i);
      if (!line_start && column + 1 + word.size() > kWidth) {
        out += '\n';
        out.append(indent, ' ');
        column = indent;
        line_start = true;
      }
      if (!line_start) {
        out += ' ';
        ++column;
      }
      out += word;
      column += word.size();
      line_start = false;
      i = space + 1;
    }
    start = nl + 1;
  }
}

}  // namespace

Parser::Parser(std::string usage, std::string about) : usage_(std::move(usage)), about_(std::move(about)) {}

Parser& Parser::section(std::string title) {
  pending_section_ = std::move(title);
  return *this;
}

Parser& Parser::add(std::initializer_list<const char*> names, Entry e) {
  e.names.assign(names.begin(), names.end());
  e.section = std::exchange(pending_section_, {});
  for (const std::string& n : e.names)
    if (find(n)) throw std::logic_error("option " + n + " declared twice");
  entries_.push_back(std::move(e));
  return *this;
}

Parser& Parser::flag(std::initializer_list<const char*> names, std::string help, std::function<void()> on) {
  Entry e;
  e.help = std::move(help);
  e.on_flag = std::move(on);
  return add(names, std::move(e));
}

Parser& Parser::flag(std::initializer_list<const char*> names, std::string help, bool& target) {
  return flag(names, std::move(help), [&target] { target = true; });
}

Parser& Parser::option(std::initializer_list<const char*> names, std::string value_name, std::string help,
                       std::function<void(const std::string&, const std::string&)> on) {
  Entry e;
  e.value_name = std::move(value_name);
  e.help = std::move(help);
  e.on_value = std::move(on);
  return add(names, std::move(e));
}

Parser& Parser::option(std::initializer_list<const char*> names, std::string value_name, std::string help,
                       std::string& target) {
  return option(names, std::move(value_name), std::move(help),
                [&target](const std::string&, const std::string& v) { target = v; });
}

Parser& Parser::positional(std::string value_name, std::string help, std::function<void(const std::string&)> on) {
  positional_name_ = std::move(value_name);
  positional_help_ = std::move(help);
  on_positional_ = std::move(on);
  return *this;
}

Parser& Parser::epilog(std::string text) {
  epilog_ = std::move(text);
  return *this;
}

const Parser::Entry* Parser::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (std::find(e.names.begin(), e.names.end(), name) != e.names.end()) return &e;
  return nullptr;
}

std::string Parser::suggestion(const std::string& given) const {
  std::string best;
  size_t best_d = std::max<size_t>(2, given.size() / 3) + 1;
  for (const Entry& e : entries_)
    for (const std::string& n : e.names)
      if (const size_t d = edit_distance(given, n); d < best_d) best_d = d, best = n;
  if (best.empty() && std::string("--help").find(given) == 0 && given.size() > 2) best = "--help";
  return best.empty() ? "" : "; did you mean '" + best + "'?";
}

bool Parser::parse(const std::vector<std::string>& args) const {
  // -h/--help in an option's place (not as another option's value) wins over everything else.
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (const Entry* e = find(args[i]); e && !e->value_name.empty()) ++i;
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const Entry* e = a.size() > 1 && a[0] == '-' ? find(a) : nullptr;
    if (!e) {
      if (a.size() > 1 && a[0] == '-' && !(std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.'))
        throw UsageError("unknown option '" + a + "'" + suggestion(a));
      if (!on_positional_)
        throw UsageError("unexpected argument '" + a + "'" +
                         (a.size() > 1 && a[0] == '-' ? std::string(" (an option's value goes right after it)") : ""));
      on_positional_(a);
      continue;
    }
    if (e->value_name.empty()) {
      e->on_flag();
      continue;
    }
    if (i + 1 >= args.size()) throw UsageError(a + " needs a value (" + a + " " + e->value_name + ")");
    e->on_value(a, args[++i]);
  }
  return true;
}

std::string Parser::help() const {
  std::string out = usage_;
  if (!out.empty() && out.back() != '\n') out += '\n';
  if (!about_.empty()) {
    out += '\n';
    out += about_;
    if (out.back() != '\n') out += '\n';
  }
  if (!positional_name_.empty() && !positional_help_.empty()) {
    out += "\n  ";
    out += positional_name_;
    size_t column = 2 + positional_name_.size();
    if (column + 2 > kHelpColumn) {
      out += '\n';
      column = 0;
    }
    out.append(kHelpColumn - column, ' ');
    wrap(out, positional_help_, kHelpColumn, kHelpColumn);
    out += '\n';
  }
  for (size_t k = 0; k < entries_.size(); ++k) {
    const Entry& e = entries_[k];
    if (!e.section.empty() || k == 0) {
      out += '\n';
      out += e.section.empty() ? "options:" : e.section;
      out += '\n';
    }
    std::string names = "  ";
    for (size_t n = 0; n < e.names.size(); ++n) names += (n ? ", " : "") + e.names[n];
    if (!e.value_name.empty()) names += " " + e.value_name;
    out += names;
    size_t column = names.size();
    if (column + 2 > kHelpColumn) {
      out += '\n';
      column = 0;
    }
    out.append(kHelpColumn - column, ' ');
    wrap(out, e.help, kHelpColumn, kHelpColumn);
    out += '\n';
  }
  out += "  -h, --help";
  out.append(kHelpColumn - 12, ' ');
  out += "print this help and exit\n";
  if (!epilog_.empty()) {
    out += '\n';
    out += epilog_;
    if (out.back() != '\n') out += '\n';
  }
  return out;
}

}  // namespace chorus::tools::cli
