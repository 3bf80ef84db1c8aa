// GGUF reader: the real files in ../shared/models load with their known facts; every kind of
// corruption (made here by patching a copy of stories260K.gguf, or by writing small files with
// GgufWriter) gives a gguf::Error naming the file and the field; a deterministic mutation fuzz
// never crashes, hangs or allocates absurdly.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <typeinfo>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "tests/gpu.h"

namespace {

namespace fs = std::filesystem;
using chorus::GgmlType;
using chorus::gguf::Error;
using chorus::gguf::File;
using chorus::gguf::OpenOptions;
using chorus::gguf::ValueType;

const std::string kModels = chorus::test::shared_dir() + "/models/";
const std::string kStories = kModels + "stories260K.gguf";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Fails the test (rather than skipping) when a shared model is missing: these files are part
// of the checkout's environment and the reader's acceptance depends on them.
#define REQUIRE_FILE(path) \
  if (!fs::exists(path)) FAIL() << "missing test model " << (path) << " (expected beside the repository)"

// A scratch file, removed on destruction.
class TempFile {
 public:
  explicit TempFile(const std::string& tag)
      : path_((fs::temp_directory_path() / ("chorus-gguf-" + std::to_string(::getpid()) + "-" + tag + ".gguf")).string()) {}
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& write(const std::vector<uint8_t>& bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <class T>
void put(std::vector<uint8_t>& b, size_t at, T v) {
  ASSERT_LE(at + sizeof v, b.size());
  std::memcpy(b.data() + at, &v, sizeof v);
}

// Opens bytes as a file and expects a gguf::Error whose message names the file and contains
// every one of parts. Returns the message.
std::string expect_error(const std::vector<uint8_t>& bytes, const std::vector<std::string>& parts,
                         const OpenOptions& options = {}) {
  TempFile tmp("bad");
  const std::string& path = tmp.write(bytes);
  try {
    File::open(path, options);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected gguf::Error containing '" << (parts.empty() ? "" : parts[0]) << "'";
  return {};
}

// Writes small GGUF files for the cases stories260K cannot express.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) {
    raw(std::string("GGUF"));
    u32(version);
    n_tensors_at_ = b_.size();
    u64(0);
    n_kv_at_ = b_.size();
    u64(0);
  }
  GgufWriter& u32(uint32_t v) { return pod(v); }
  GgufWriter& u64(uint64_t v) { return pod(v); }
  GgufWriter& str(const std::string& s) {
    u64(s.size());
    return raw(s);
  }
  GgufWriter& raw(const std::string& s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  template <class T>
  GgufWriter& pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b_.insert(b_.end(), p, p + sizeof v);
    return *this;
  }
  // A key and its value type; the caller appends the value.
  GgufWriter& key(const std::string& k, ValueType t) {
    ++n_kv_;
    str(k);
    return u32(static_cast<uint32_t>(t));
  }
  GgufWriter& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    ++n_tensors_;
    str(name);
    u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    u32(type);
    return u64(offset);
  }
  // Pads to alignment and appends data_bytes of data.
  std::vector<uint8_t> finish(uint64_t alignment = 32, uint64_t data_bytes = 0) {
    std::vector<uint8_t> out = b_;
    std::memcpy(out.data() + n_tensors_at_, &n_tensors_, 8);
    std::memcpy(out.data() + n_kv_at_, &n_kv_, 8);
    while (out.size() % alignment) out.push_back(0);
    out.resize(out.size() + data_bytes, 0x3c);
    return out;
  }

 private:
  std::vector<uint8_t> b_;
  size_t n_tensors_at_ = 0;
  size_t n_kv_at_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
};

File open_bytes(const TempFile& tmp, const std::vector<uint8_t>& bytes, const OpenOptions& options = {}) {
  return File::open(tmp.write(bytes), options);
}

// --- the real files ----------------------------------------------------------------------------

TEST(GgufRealFiles, Stories260KHasItsKnownHeaderMetadataAndTensors) {
  REQUIRE_FILE(kStories);
  const File f = File::open(kStories);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 14176u);
  EXPECT_EQ(f.file_size(), fs::file_size(kStories));
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.require_u32("llama.embedding_length"), 64u);
  EXPECT_EQ(f.require_u32("llama.block_count"), 5u);
  EXPECT_EQ(f.require_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_FLOAT_EQ(f.require_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(f.array_size("tokenizer.ggml.tokens"), 512u);
  const auto tokens = f.require_array_strings("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(f.array_f32("tokenizer.ggml.scores")->size(), 512u);
  const auto types = f.array_i32("tokenizer.ggml.token_type");
  ASSERT_TRUE(types);
  EXPECT_EQ((std::vector<int32_t>(types->begin(), types->begin() + 4)), (std::vector<int32_t>{2, 3, 3, 6}));

  const auto& emb = f.require_tensor("token_embd.weight");
  EXPECT_EQ(emb.n_dims, 2u);
  EXPECT_EQ((std::vector<uint64_t>(emb.dims().begin(), emb.dims().end())), (std::vector<uint64_t>{64, 512}));
  EXPECT_EQ(emb.type, GgmlType::F32);
  EXPECT_EQ(emb.size, 64u * 512u * 4u);
  EXPECT_EQ(emb.row_bytes(), 256u);
  EXPECT_EQ(emb.n_rows(), 512u);
  EXPECT_EQ(emb.data.data(), f.bytes().data() + f.data_offset() + emb.offset);
  EXPECT_EQ(f.tensors().front().name, "token_embd.weight");
  const auto& last = f.tensors().back();
  EXPECT_EQ(f.data_offset() + last.offset + last.size, f.file_size()) << "the last tensor ends the file";
  EXPECT_EQ(f.find_tensor("no.such.tensor"), nullptr);
}

TEST(GgufRealFiles, TinyRandomLlama2HasF16Weights) {
  const std::string path = kModels + "llama-2-tiny-random.gguf";
  REQUIRE_FILE(path);
  const File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  const auto& out = f.require_tensor("output.weight");
  EXPECT_EQ(out.type, GgmlType::F16);
  EXPECT_EQ((std::vector<uint64_t>(out.dims().begin(), out.dims().end())), (std::vector<uint64_t>{8, 32000}));
  EXPECT_EQ(out.size, 8u * 32000u * 2u);
  size_t f16 = 0;
  for (const auto& t : f.tensors()) {
    EXPECT_TRUE(t.traits->supported) << t.name;
    f16 += t.type == GgmlType::F16;
    EXPECT_LE(f.data_offset() + t.offset + t.size, f.file_size()) << t.name;
  }
  EXPECT_GT(f16, 0u);
  EXPECT_EQ(f.require_u32("llama.embedding_length"), 8u);
}

TEST(GgufRealFiles, VocabOnlyFilesLoadWithNoTensorsEvenWhenTheDataOffsetIsPastTheEnd) {
  const std::string dir = kModels + "vocab";
  REQUIRE_FILE(dir);
  size_t n = 0;
  bool past_end_seen = false;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    SCOPED_TRACE(entry.path().string());
    const File f = File::open(entry.path().string());
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_GT(f.array_size("tokenizer.ggml.tokens").value_or(0), 0u);
    EXPECT_TRUE(f.get_string("tokenizer.ggml.model").has_value());
    past_end_seen |= f.data_offset() > f.file_size();
    ++n;
  }
  EXPECT_GE(n, 4u) << "expected the vocab files gpt-2, llama-bpe, llama-spm, phi-3 in " << dir;
  EXPECT_TRUE(past_end_seen) << "no vocab file exercised a data offset past the end";
}

TEST(GgufRealFiles, Version1LegacyFileGivesOneClearError) {
  const std::string path = kModels + "legacy/tinyllamas-stories-260k-f32.gguf";
  REQUIRE_FILE(path);
  try {
    File::open(path);
    FAIL() << "a version 1 file loaded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": GGUF version 1 is not supported (files from before Aug 2023); re-convert the model");
  }
}

TEST(GgufRealFiles, MissingFileAndDirectoryAreErrorsNamingThePath) {
  EXPECT_THROW(File::open("/nonexistent/model.gguf"), Error);
  try {
    File::open(kModels);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}

TEST(GgufRealFiles, AFifoIsRefusedAtOnceInsteadOfBlockingInOpen) {
  // open(2) of a FIFO without a writer used to block forever, before the regular-file check.
  const std::string fifo = std::filesystem::temp_directory_path() / ("chorus-gguf-fifo-" + std::to_string(::getpid()));
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    File::open(fifo);
    ADD_FAILURE() << "a FIFO opened as a GGUF file";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), fifo + ": a FIFO (named pipe), not a regular file (expected a .gguf file)");
  }
  std::filesystem::remove(fifo);
  try {
    File::open("/dev/zero");
    ADD_FAILURE() << "/dev/zero opened as a GGUF file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/zero: a character device"), std::string::npos) << e.what();
  }
}

// --- typed accessors ---------------------------------------------------------------------------

class GgufAccessors : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_FILE(kStories);
    file_.emplace(File::open(kStories));
  }
  std::string error_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no gguf::Error";
    return {};
  }
  std::optional<File> file_;
};

TEST_F(GgufAccessors, AbsentKeysAreNulloptAndRequiredOnesNameTheKeyAndType) {
  const File& f = *file_;
  EXPECT_FALSE(f.get_u32("llama.no_such_key"));
  EXPECT_FALSE(f.get_string("llama.no_such_key"));
  EXPECT_FALSE(f.array_strings("llama.no_such_key"));
  EXPECT_EQ(error_of([&] { f.require_u32("llama.expert_count"); }),
            kStories + ": missing required key 'llama.expert_count' (expected u32)");
  EXPECT_EQ(error_of([&] { f.require_array_strings("tokenizer.ggml.merges"); }),
            kStories + ": missing required key 'tokenizer.ggml.merges' (expected array of string)");
  EXPECT_EQ(error_of([&] { f.require_tensor("blk.9.attn_q.weight"); }),
            kStories + ": missing required tensor 'blk.9.attn_q.weight'");
}

TEST_F(GgufAccessors, IntegersConvertWhenTheValueFitsAndWrongTypesNameTheKey) {
  const File& f = *file_;
  EXPECT_EQ(f.get_u64("llama.block_count"), 5u);
  EXPECT_EQ(f.get_i32("llama.block_count"), 5);
  EXPECT_EQ(f.get_f32("llama.block_count"), 5.0f);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.padding_token_id"), 0xFFFFFFFFu);
  const std::string too_big = error_of([&] { f.get_i32("tokenizer.ggml.padding_token_id"); });
  EXPECT_NE(too_big.find("'tokenizer.ggml.padding_token_id' = 4294967295 (u32) does not fit i32"), std::string::npos)
      << too_big;
  const std::string not_int = error_of([&] { f.get_u32("general.architecture"); });
  EXPECT_NE(not_int.find("key 'general.architecture' has type string (value 'llama'), expected u32"), std::string::npos)
      << not_int;
  const std::string not_string = error_of([&] { f.get_string("llama.block_count"); });
  EXPECT_NE(not_string.find("expected string"), std::string::npos) << not_string;
  const std::string not_array = error_of([&] { f.array_strings("general.name"); });
  EXPECT_NE(not_array.find("expected array of string"), std::string::npos) << not_array;
  const std::string wrong_elems = error_of([&] { f.array_i32("tokenizer.ggml.tokens"); });
  EXPECT_NE(wrong_elems.find("has type [string; 512], expected array of i32"), std::string::npos) << wrong_elems;
  EXPECT_THROW(f.get_bool("llama.block_count"), Error);
}

TEST_F(GgufAccessors, DescribeFunctionsPrintTypesValuesAndTensors) {
  const File& f = *file_;
  EXPECT_EQ(chorus::gguf::describe_type(*f.find("tokenizer.ggml.tokens")), "[string; 512]");
  EXPECT_EQ(chorus::gguf::describe_value(*f.find("tokenizer.ggml.tokens"), 2), "['<unk>', '<s>', ...]");
  EXPECT_EQ(chorus::gguf::describe_value(*f.find("llama.attention.layer_norm_rms_epsilon")), "1e-05");
  EXPECT_EQ(chorus::gguf::describe_value(*f.find("general.architecture")), "'llama'");
  EXPECT_EQ(chorus::gguf::describe_tensor(f.require_tensor("output.weight")), "F32 [64, 512]");
}

TEST(GgufWriterFiles, Version2FileWithEveryValueTypeReadsBack) {
  GgufWriter w(2);
  w.key("a.u8", ValueType::U8).pod<uint8_t>(200);
  w.key("a.i8", ValueType::I8).pod<int8_t>(-5);
  w.key("a.u16", ValueType::U16).pod<uint16_t>(60000);
  w.key("a.i16", ValueType::I16).pod<int16_t>(-30000);
  w.key("a.i32", ValueType::I32).pod<int32_t>(-7);
  w.key("a.f32", ValueType::F32).pod<float>(0.5f);
  w.key("a.bool", ValueType::Bool).pod<uint8_t>(1);
  w.key("a.u64", ValueType::U64).pod<uint64_t>(1ull << 40);
  w.key("a.i64", ValueType::I64).pod<int64_t>(-(1ll << 40));
  w.key("a.f64", ValueType::F64).pod<double>(0.25);
  w.key("a.ints", ValueType::Array).u32(static_cast<uint32_t>(ValueType::I16)).u64(3).pod<int16_t>(-1).pod<int16_t>(2).pod<int16_t>(3);
  w.key("a.f64s", ValueType::Array).u32(static_cast<uint32_t>(ValueType::F64)).u64(2).pod<double>(1.5).pod<double>(-2);
  w.key("a.strs", ValueType::Array).u32(static_cast<uint32_t>(ValueType::String)).u64(3).str("x").str("").str("yz");
  w.key("a.empty", ValueType::Array).u32(static_cast<uint32_t>(ValueType::U8)).u64(0);
  w.key("general.alignment", ValueType::U32).u32(64);
  w.tensor("t", {32, 2}, static_cast<uint32_t>(GgmlType::Q8_0), 0);
  TempFile tmp("v2");
  const File f = open_bytes(tmp, w.finish(64, 68));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.get_u32("a.u8"), 200u);
  EXPECT_EQ(f.get_i32("a.i8"), -5);
  EXPECT_THROW(f.get_u32("a.i8"), Error);
  EXPECT_EQ(f.get_u32("a.u16"), 60000u);
  EXPECT_EQ(f.get_i32("a.i16"), -30000);
  EXPECT_EQ(f.get_i32("a.i32"), -7);
  EXPECT_EQ(f.get_f32("a.f32"), 0.5f);
  EXPECT_EQ(f.get_bool("a.bool"), true);
  EXPECT_EQ(f.get_u64("a.u64"), 1ull << 40);
  EXPECT_THROW(f.get_u32("a.u64"), Error);
  EXPECT_EQ(f.find("a.i64")->as_i64(), -(1ll << 40));
  EXPECT_EQ(f.get_f32("a.f64"), 0.25f);
  EXPECT_EQ(f.array_i32("a.ints"), (std::vector<int32_t>{-1, 2, 3}));
  EXPECT_EQ(f.array_f32("a.f64s"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.array_strings("a.strs"), (std::vector<std::string_view>{"x", "", "yz"}));
  EXPECT_EQ(f.array_size("a.empty"), 0u);
  EXPECT_EQ(chorus::gguf::describe_value(*f.find("a.ints")), "[-1, 2, 3]");
  const auto& t = f.require_tensor("t");
  EXPECT_EQ(t.type, GgmlType::Q8_0);
  EXPECT_EQ(t.size, 68u);
  EXPECT_EQ(t.row_bytes(), 34u);
}

TEST(GgufWriterFiles, UnsupportedGgmlTypesAreRejectedByDefaultAndListedWhenAllowed) {
  GgufWriter w;
  w.tensor("q", {256, 1}, 16, 0);  // IQ2_XXS: 66 bytes per 256
  const auto bytes = w.finish(32, 66);
  expect_error(bytes, {"tensor 'q'", "ggml type IQ2_XXS (id 16) is not supported"});
  TempFile tmp("iq");
  const File f = open_bytes(tmp, bytes, OpenOptions{.allow_unsupported_types = true});
  EXPECT_FALSE(f.tensors()[0].traits->supported);
  EXPECT_STREQ(f.tensors()[0].traits->name, "IQ2_XXS");
  EXPECT_EQ(f.tensors()[0].size, 66u);
}

TEST(GgufWriterFiles, EmptyFileWithNoKeysOrTensorsLoads) {
  TempFile tmp("empty");
  const File f = open_bytes(tmp, GgufWriter().finish(1, 0));
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufWriterFiles, DefectsOnlyAHandWrittenFileCanHaveAreErrors) {
  {
    GgufWriter w;
    w.key("general.alignment", ValueType::U32).u32(48);
    expect_error(w.finish(), {"key 'general.alignment'", "= 48, expected a power of two"});
  }
  {
    GgufWriter w;
    w.key("general.alignment", ValueType::U32).u32(0);
    expect_error(w.finish(), {"expected a power of two"});
  }
  {
    GgufWriter w;
    w.key("general.alignment", ValueType::String).str("32");
    expect_error(w.finish(), {"key 'general.alignment'", "expected a u32"});
  }
  {
    GgufWriter w;
    w.key("nested", ValueType::Array).u32(static_cast<uint32_t>(ValueType::Array)).u64(1);
    expect_error(w.finish(), {"key 'nested'", "arrays of arrays are not supported"});
  }
  {
    GgufWriter w;
    w.key("arr", ValueType::Array).u32(13).u64(1);
    expect_error(w.finish(), {"key 'arr'", "array element type 13", "unknown"});
  }
  {
    GgufWriter w;
    w.tensor("q4", {48}, static_cast<uint32_t>(GgmlType::Q4_0), 0);
    expect_error(w.finish(32, 64), {"tensor 'q4'", "row of 48 elements is not a multiple of the Q4_0 block size 32"});
  }
  {
    GgufWriter w;
    w.tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 0);
    expect_error(w.finish(32, 64), {"tensor 'b'", "overlaps tensor 'a'"});
  }
  {
    GgufWriter w;
    w.tensor("wide", {1ull << 62, 1}, static_cast<uint32_t>(GgmlType::F32), 0);  // elements fit int64, bytes do not
    expect_error(w.finish(), {"tensor 'wide'", "overflows 64 bits"});
  }
  {
    GgufWriter w(4);
    expect_error(w.finish(), {"GGUF version 4 is not supported (expected 2 or 3)"});
  }
  {
    GgufWriter w(0x03000000);
    expect_error(w.finish(), {"big-endian"});
  }
  {
    GgufWriter w;
    w.raw("\x01\x02").key("k", ValueType::U8);  // nonsense: two stray bytes shift the key length
    expect_error(w.finish(1, 0), {});
  }
  {
    std::vector<uint8_t> ggjt = {'t', 'j', 'g', 'g', 3, 0, 0, 0};
    ggjt.resize(64, 0);
    expect_error(ggjt, {"not a GGUF file", "pre-GGUF"});
  }
  expect_error(std::vector<uint8_t>{'G', 'G', 'U', 'F', 3, 0}, {"too short"});
  expect_error(std::vector<uint8_t>{}, {"too short"});
}

// --- corruptions of stories260K ------------------------------------------------------------------

class GgufCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_FILE(kStories);
    original_ = read_bytes(kStories);
    const File f = File::open(kStories);
    data_offset_ = f.data_offset();
    // Field positions, found through the reader on the intact file.
    const auto pos = [&](const void* p) { return static_cast<size_t>(static_cast<const uint8_t*>(p) - f.bytes().data()); };
    const auto& kvs = f.metadata();
    key0_len_at_ = pos(kvs[0].key.data()) - 8;
    key0_type_at_ = pos(kvs[0].key.data()) + kvs[0].key.size();
    ASSERT_EQ(kvs[0].key, "tokenizer.ggml.tokens");
    tokens_count_at_ = key0_type_at_ + 4 + 4;
    for (const auto& kv : kvs) key_at_[std::string(kv.key)] = pos(kv.key.data());
    for (const auto& t : f.tensors()) {
      const size_t name_at = pos(t.name.data());
      tensor_at_[std::string(t.name)] = {name_at + t.name.size(), t.n_dims};  // -> n_dims field
    }
  }

  // Offsets of the fields of a tensor-info record.
  size_t n_dims_at(const std::string& name) { return tensor_at_.at(name).first; }
  size_t dim_at(const std::string& name, uint32_t d) { return n_dims_at(name) + 4 + 8 * d; }
  size_t type_at(const std::string& name) { return dim_at(name, tensor_at_.at(name).second); }
  size_t offset_at(const std::string& name) { return type_at(name) + 4; }

  std::vector<uint8_t> original_;
  uint64_t data_offset_ = 0;
  size_t key0_len_at_ = 0;
  size_t key0_type_at_ = 0;
  size_t tokens_count_at_ = 0;
  std::map<std::string, size_t> key_at_;
  std::map<std::string, std::pair<size_t, uint32_t>> tensor_at_;
};

TEST_F(GgufCorrupt, FieldPositionsFoundThroughTheReaderAreRight) {
  auto b = original_;
  uint64_t count = 0;
  std::memcpy(&count, b.data() + tokens_count_at_, 8);
  EXPECT_EQ(count, 512u);
  uint32_t type = 0;
  std::memcpy(&type, b.data() + type_at("blk.0.ffn_down.weight"), 4);
  EXPECT_EQ(type, 0u);
  uint64_t off = 0;
  std::memcpy(&off, b.data() + offset_at("output_norm.weight"), 8);
  EXPECT_EQ(off, 131072u);
}

TEST_F(GgufCorrupt, BadMagicIsNotAGgufFile) {
  auto b = original_;
  b[0] = 'X';
  expect_error(b, {"not a GGUF file: magic bytes are 58 47 55 46, expected 47 47 55 46"});
}

TEST_F(GgufCorrupt, TruncationAnywhereIsAnErrorNotACrash) {
  std::vector<size_t> cuts;
  for (size_t n = 0; n < data_offset_; n += 97) cuts.push_back(n);
  for (size_t n : {size_t(data_offset_ - 1), size_t(data_offset_), size_t(data_offset_ + 1), size_t(data_offset_ + 4096),
                   original_.size() / 2, original_.size() - 1})
    cuts.push_back(n);
  for (size_t n : cuts) {
    SCOPED_TRACE("truncated to " + std::to_string(n) + " bytes");
    const std::vector<uint8_t> b(original_.begin(), original_.begin() + static_cast<std::ptrdiff_t>(n));
    expect_error(b, {});
  }
  const std::vector<uint8_t> b(original_.begin(), original_.end() - 1);
  expect_error(b, {"tensor 'blk.4.ffn_norm.weight'", "data [1185120, 1185376) lies outside the file (size 1185375)"});
  const std::vector<uint8_t> mid(original_.begin(), original_.begin() + 5000);
  expect_error(mid, {"key 'tokenizer.ggml.tokens'", "are left (truncated file?)"});
}

TEST_F(GgufCorrupt, HugeTensorCountIsImpossible) {
  auto b = original_;
  put<uint64_t>(b, 8, 1ull << 60);
  expect_error(b, {"tensor count 1152921504606846976 is impossible"});
}

TEST_F(GgufCorrupt, HugeKeyValueCountIsImpossible) {
  auto b = original_;
  put<uint64_t>(b, 16, ~0ull);
  expect_error(b, {"key/value count 18446744073709551615 is impossible"});
}

TEST_F(GgufCorrupt, HugeStringLengthIsRejectedBeforeReading) {
  auto b = original_;
  put<uint64_t>(b, key0_len_at_, 1ull << 63);
  expect_error(b, {"key #0", "key name has length 9223372036854775808", "bytes left in the file"});
  b = original_;
  put<uint64_t>(b, tokens_count_at_ + 8, 1ull << 40);  // the first token's length
  expect_error(b, {"key 'tokenizer.ggml.tokens'", "string #0 of the array has length 1099511627776"});
}

TEST_F(GgufCorrupt, HugeArrayLengthIsRejectedBeforeReserving) {
  auto b = original_;
  put<uint64_t>(b, tokens_count_at_, 1ull << 61);
  expect_error(b, {"key 'tokenizer.ggml.tokens'", "array of 2305843009213693952 strings cannot fit"});
  // A fixed-size array whose byte count overflows 64 bits.
  b = original_;
  const size_t scores_count_at = key_at_.at("tokenizer.ggml.scores") + std::strlen("tokenizer.ggml.scores") + 4 + 4;
  put<uint64_t>(b, scores_count_at, ~0ull / 2);
  expect_error(b, {"key 'tokenizer.ggml.scores'", "array of 9223372036854775807 f32 needs more than 2^64 bytes"});
}

TEST_F(GgufCorrupt, FiveDimensionsAreRejected) {
  auto b = original_;
  put<uint32_t>(b, n_dims_at("blk.0.attn_q.weight"), 5);
  expect_error(b, {"tensor 'blk.0.attn_q.weight'", "has 5 dimensions, expected 1 to 4"});
  put<uint32_t>(b, n_dims_at("blk.0.attn_q.weight"), 0);
  expect_error(b, {"has 0 dimensions"});
}

TEST_F(GgufCorrupt, ZeroDimensionIsRejected) {
  auto b = original_;
  put<uint64_t>(b, dim_at("output.weight", 1), 0);
  expect_error(b, {"tensor 'output.weight'", "dimension 1 is 0, expected at least 1"});
}

TEST_F(GgufCorrupt, DimensionsWhoseProductOverflowsAreRejected) {
  auto b = original_;
  put<uint64_t>(b, dim_at("output.weight", 0), 1ull << 33);
  put<uint64_t>(b, dim_at("output.weight", 1), 1ull << 33);
  expect_error(b, {"tensor 'output.weight'", "dimensions [8589934592, 8589934592] have a product beyond the int64 range"});
  b = original_;
  put<uint64_t>(b, dim_at("output.weight", 0), ~0ull);
  expect_error(b, {"tensor 'output.weight'", "beyond the int64 range"});
}

TEST_F(GgufCorrupt, UnknownTensorTypeNamesTheIdAndTheTensor) {
  auto b = original_;
  put<uint32_t>(b, type_at("blk.2.ffn_up.weight"), 99);
  expect_error(b, {"tensor 'blk.2.ffn_up.weight'", "unknown ggml type id 99"});
}

TEST_F(GgufCorrupt, UnknownValueTypeIsRejected) {
  auto b = original_;
  put<uint32_t>(b, key0_type_at_, 77);
  expect_error(b, {"key 'tokenizer.ggml.tokens'", "value type 77", "is unknown (expected 0..12"});
}

TEST_F(GgufCorrupt, TensorOffsetOutsideTheFileIsRejected) {
  auto b = original_;
  put<uint64_t>(b, offset_at("blk.4.ffn_norm.weight"), 1ull << 40);
  expect_error(b, {"tensor 'blk.4.ffn_norm.weight'", "data [1099511641952, 1099511642208) lies outside the file (size 1185376)"});
  put<uint64_t>(b, offset_at("blk.4.ffn_norm.weight"), ~0ull - 31);
  expect_error(b, {"tensor 'blk.4.ffn_norm.weight'", "overflows 64 bits"});
}

TEST_F(GgufCorrupt, MisalignedTensorOffsetIsRejected) {
  auto b = original_;
  put<uint64_t>(b, offset_at("output_norm.weight"), 131072 + 4);
  expect_error(b, {"tensor 'output_norm.weight'", "data offset 131076 is not a multiple of the alignment 32"});
}

TEST_F(GgufCorrupt, DuplicateKeyIsRejected) {
  // "general.architecture" and "tokenizer.ggml.model" have the same length.
  auto b = original_;
  const std::string dup = "tokenizer.ggml.model";
  std::memcpy(b.data() + key_at_.at("general.architecture"), dup.data(), dup.size());
  expect_error(b, {"key 'tokenizer.ggml.model'", "duplicate key (first defined as key #3)"});
}

TEST_F(GgufCorrupt, DuplicateTensorNameIsRejected) {
  auto b = original_;
  const size_t name_at = n_dims_at("blk.1.attn_q.weight") - std::strlen("blk.1.attn_q.weight");
  b[name_at + 4] = '0';
  expect_error(b, {"tensor 'blk.0.attn_q.weight'", "duplicate tensor name (first defined as tensor #3)"});
}

TEST_F(GgufCorrupt, OverlappingTensorsAreRejected) {
  auto b = original_;
  put<uint64_t>(b, offset_at("output_norm.weight"), 0);
  expect_error(b, {"overlaps tensor"});
}

// Deterministic mutation fuzz over the header region: each mutant loads or throws gguf::Error;
// nothing else (no crash, no bad_alloc, no other exception). Byte flips and 64-bit overwrites
// are patched into one full-size copy in place (so tensor data stays valid); insertions and
// deletions shift everything after them.
TEST_F(GgufCorrupt, ThreeThousandSeededMutationsOfTheHeaderLoadOrThrowGgufError) {
  TempFile tmp("fuzz");
  tmp.write(original_);
  size_t loaded = 0;
  size_t rejected = 0;
  const auto try_open = [&](const std::string& what) {
    try {
      const File f = File::open(tmp.path());
      for (const auto& t : f.tensors()) ASSERT_LE(f.data_offset() + t.offset + t.size, f.file_size()) << what;
      for (const auto& kv : f.metadata()) (void)chorus::gguf::describe_value(kv.value);
      ++loaded;
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind(tmp.path() + ": ", 0), 0u) << what << ": " << e.what();
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << what << ": unexpected " << typeid(e).name() << ": " << e.what();
    }
  };
  std::mt19937_64 rng(20240917);
  const size_t header = static_cast<size_t>(data_offset_);
  std::fstream io(tmp.path(), std::ios::binary | std::ios::in | std::ios::out);
  const auto patch = [&](size_t at, const uint8_t* bytes, size_t n) {
    io.seekp(static_cast<std::streamoff>(at));
    io.write(reinterpret_cast<const char*>(bytes), static_cast<std::streamsize>(n));
    io.flush();
  };
  for (int i = 0; i < 2400; ++i) {
    const size_t at = rng() % (header - 8);
    uint8_t m[8];
    std::memcpy(m, original_.data() + at, 8);
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) m[0] ^= static_cast<uint8_t>(1u << (rng() % 8));
    else if (kind == 1) m[0] = static_cast<uint8_t>(rng());
    else if (kind == 2) { const uint64_t v = rng() >> (rng() % 64); std::memcpy(m, &v, 8); }
    else { const uint64_t v = ~0ull - (rng() % 4); std::memcpy(m, &v, 8); }
    patch(at, m, 8);
    try_open("mutation " + std::to_string(i) + " kind " + std::to_string(kind) + " at " + std::to_string(at));
    patch(at, original_.data() + at, 8);
    if (HasFatalFailure()) return;
  }
  io.close();
  // Insertions and deletions: shift the rest (written as a short file: only the header and a
  // little data, which also exercises "outside the file").
  const std::vector<uint8_t> head(original_.begin(), original_.begin() + static_cast<std::ptrdiff_t>(header + 512));
  for (int i = 0; i < 600; ++i) {
    std::vector<uint8_t> b = head;
    const size_t at = rng() % header;
    const size_t n = 1 + rng() % 16;
    if (i % 2) b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), n, static_cast<uint8_t>(rng()));
    else b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(std::min(at + n, b.size())));
    tmp.write(b);
    try_open("shift " + std::to_string(i) + " at " + std::to_string(at));
    if (HasFatalFailure()) return;
  }
  std::printf("mutants: %zu loaded, %zu rejected with gguf::Error\n", loaded, rejected);
  EXPECT_GT(rejected, 100u);
  EXPECT_GT(loaded, 100u) << "flips inside strings and values should still load";
}

// --- chorus inspect ------------------------------------------------------------------------------

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

RunResult run_chorus(const std::string& args) {
  const std::string cmd = std::string(CHORUS_BINARY) + " " + args + " 2>&1";
  RunResult r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(ChorusInspect, PrintsMetadataAndTheTensorTableOfStories260K) {
  REQUIRE_FILE(kStories);
  const RunResult r = run_chorus("inspect " + kStories);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"GGUF version 3", "19 key/value pairs", "u32              llama.block_count = 5",
                           "[string; 512]    tokenizer.ggml.tokens = ['<unk>', '<s>', '</s>'", "48 tensors",
                           "[64, 512]", "token_embd.weight", "1171200 bytes of tensor data"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "'" << part << "' not in:\n" << r.output;
}

TEST(ChorusInspect, ABadFileIsOneErrorLineAndExitCodeOne) {
  const std::string path = kModels + "legacy/tinyllamas-stories-260k-f32.gguf";
  REQUIRE_FILE(path);
  const RunResult r = run_chorus("inspect " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "chorus inspect: error: " + path +
                          ": GGUF version 1 is not supported (files from before Aug 2023); re-convert the model\n");
  EXPECT_EQ(run_chorus("inspect").exit_code, 2);
}

}  // namespace
