// `chorus tokenize`: the token ids of a text, printed like llama.cpp's llama-tokenize.
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace chorus::tools {

int cmd_tokenize(const std::vector<std::string>& args) {
  std::string model;
  std::optional<std::string> prompt;
  bool add_special = true, parse_special = true, ids_only = false, show_count = false;
  const auto text = [&prompt](std::string v) {
    if (prompt) throw UsageError("give the text once, with -p or -f");
    prompt = std::move(v);
  };
  cli::Parser p("usage: chorus tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos] [--no-parse-special] [--show-count]",
                "Tokenizes TEXT with the model's vocabulary (only the tokenizer.ggml.* metadata is read)\n"
                "and prints one line per token, `    id -> 'piece'`, as llama-tokenize does.");
  p.option({"-m", "--model"}, "FILE", "a GGUF file (a vocab-only file is enough)", model)
      .option({"-p", "--prompt"}, "TEXT", "the text", [&](const std::string&, const std::string& v) { text(v); })
      .option({"-f", "--file"}, "FILE", "read the text from FILE (bytes as they are; - is standard input)",
              [&](const std::string& flag, const std::string& v) { text(read_text_input(flag, v)); })
      .flag({"--ids"}, "print only the id list, e.g. [1, 15043, 3186]", ids_only)
      .flag({"--no-bos"}, "add no BOS/EOS even if the model's metadata asks for them", [&] { add_special = false; })
      .flag({"--no-parse-special"}, "control tokens' texts (<s>, <|eot_id|> ...) stay plain text", [&] { parse_special = false; })
      .flag({"--show-count"}, "print the number of tokens at the end", show_count);
  if (!p.parse(args)) return 0;
  if (model.empty()) throw UsageError("-m MODEL is required");
  if (!prompt) throw UsageError("give the text with -p TEXT or -f FILE");

  const gguf::File file = gguf::File::open(model);
  const Tokenizer tok(load_vocab(file));
  const std::vector<TokenId> ids = tok.encode(*prompt, EncodeOptions{add_special, parse_special});

  if (ids_only) {
    std::string line = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ", ";
      line += std::to_string(ids[i]);
    }
    line += "]\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
  } else {
    for (TokenId id : ids) {
      const std::string piece = tok.piece(id, true);
      std::printf("%6d -> '", id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::printf("'\n");
    }
  }
  if (show_count) std::printf("Total number of tokens: %zu\n", ids.size());
  return 0;
}

}  // namespace chorus::tools
