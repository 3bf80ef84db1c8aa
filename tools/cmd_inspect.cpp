// `chorus inspect MODEL`: the GGUF header, metadata and tensor table (gguf-dump style).
#include <cinttypes>
#include <cstdio>

#include "engine/gguf.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace chorus::tools {

int cmd_inspect(const std::vector<std::string>& args) {
  std::string path;
  bool show_tensors = true;
  uint64_t max_elems = 8;
  cli::Parser p("usage: chorus inspect MODEL.gguf [--no-tensors] [--max-elems N]",
                "Validates MODEL and prints its GGUF version, every metadata key with its type and value\n"
                "(arrays shortened to N elements, default 8) and the tensor table: elements, dimensions\n"
                "(ggml order, ne[0] first), type, byte size and offset in the data section.\n"
                "Tensors of ggml types chorus cannot run are listed too (marked 'unsupported').");
  p.flag({"--no-tensors"}, "print the metadata only", [&] { show_tensors = false; })
      .option({"--max-elems"}, "N", "array elements shown per key (default 8)",
              [&](const std::string& flag, const std::string& v) { max_elems = parse_uint(flag, v); })
      .positional("MODEL.gguf", "the file to inspect", [&](const std::string& a) {
        if (!path.empty()) throw UsageError("one model file expected, got '" + path + "' and '" + a + "'");
        path = a;
      });
  if (!p.parse(args)) return 0;
  if (path.empty()) throw UsageError("missing MODEL.gguf");

  const gguf::File f = gguf::File::open(path, gguf::OpenOptions{.allow_unsupported_types = true});
  std::printf("* %s: GGUF version %u, %s bytes, alignment %u, tensor data at offset %" PRIu64 "\n", path.c_str(),
              f.version(), std::to_string(f.file_size()).c_str(), f.alignment(), f.data_offset());
  std::printf("* %zu key/value pairs\n", f.metadata().size());
  size_t n = 0;
  for (const auto& kv : f.metadata()) {
    const std::string type = gguf::describe_type(kv.value);
    std::printf("  %5zu: %-16s %.*s = %s\n", ++n, type.c_str(), static_cast<int>(kv.key.size()), kv.key.data(),
                gguf::describe_value(kv.value, static_cast<size_t>(max_elems)).c_str());
  }
  if (!show_tensors) return 0;
  std::printf("* %zu tensors\n", f.tensors().size());
  std::printf("  %5s  %12s  %-28s %-8s %12s %12s  %s\n", "#", "elements", "dims", "type", "bytes", "offset", "name");
  n = 0;
  uint64_t total = 0;
  for (const auto& t : f.tensors()) {
    std::string dims;
    for (const uint64_t d : t.dims()) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    std::printf("  %5zu: %12" PRIu64 "  %-28s %-8s %12" PRIu64 " %12" PRIu64 "  %.*s%s\n", ++n, t.n_elements(),
                ("[" + dims + "]").c_str(), t.traits->name, t.size, t.offset, static_cast<int>(t.name.size()),
                t.name.data(), t.traits->supported ? "" : "  (unsupported)");
    total += t.size;
  }
  std::printf("* %" PRIu64 " bytes of tensor data\n", total);
  return 0;
}

}  // namespace chorus::tools
