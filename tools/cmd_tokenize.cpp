// `chorus tokenize`: the token ids of a text, printed like llama.cpp's llama-tokenize.
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/vocab.h"
#include "tools/commands.h"

namespace chorus::tools {

int cmd_tokenize(const std::vector<std::string>& args) {
  std::string model;
  std::optional<std::string> prompt;
  bool add_special = true, parse_special = true, ids_only = false, show_count = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: chorus tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos] [--no-parse-special] [--show-count]\n\n"
          "Tokenizes TEXT with the model's vocabulary (only the tokenizer.ggml.* metadata is read)\n"
          "and prints one line per token, `    id -> 'piece'`, as llama-tokenize does.\n\n"
          "  -m, --model FILE     a GGUF file (a vocab-only file is enough)\n"
          "  -p, --prompt TEXT    the text\n"
          "  -f, --file FILE      read the text from FILE (bytes as they are; - is standard input)\n"
          "  --ids                print only the id list, e.g. [1, 15043, 3186]\n"
          "  --no-bos             add no BOS/EOS even if the model's metadata asks for them\n"
          "  --no-parse-special   control tokens' texts (<s>, <|eot_id|> ...) stay plain text\n"
          "  --show-count         print the number of tokens at the end\n");
      return 0;
    }
    if (a == "-m" || a == "--model") model = take_value(args, i);
    else if (a == "-p" || a == "--prompt") {
      if (prompt) throw UsageError("give the text once, with -p or -f");
      prompt = take_value(args, i);
    } else if (a == "-f" || a == "--file") {
      if (prompt) throw UsageError("give the text once, with -p or -f");
      prompt = read_text_input(a, take_value(args, i));
    } else if (a == "--ids") ids_only = true;
    else if (a == "--no-bos") add_special = false;
    else if (a == "--no-parse-special") parse_special = false;
    else if (a == "--show-count") show_count = true;
    else throw UsageError("unknown option '" + a + "'");
  }
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
