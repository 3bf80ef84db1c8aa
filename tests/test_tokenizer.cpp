// Tokenizers: llama.cpp's tokenizer vectors for every vocab GGUF in ../shared/models/vocab,
// round trips, streaming detokenisation, the pre-tokenizer regexes, special tokens, add-BOS
// rules, and errors for bad vocabulary metadata. No GPU.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "engine/vocab.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

const std::string kModels = test::shared_dir() + "/models/";
const std::string kVocabDir = kModels + "vocab/";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool exists(const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  ADD_FAILURE() << path << " is missing: the tests need ../shared (beside the repository) with models/vocab/";
  return false;
}

// A tokenizer per vocab file, loaded once for the whole suite.
const Tokenizer& tokenizer_for(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<Tokenizer>(load_vocab(gguf::File::open(kVocabDir + name)));
  return *slot;
}

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

// .inp: strings each followed by "\n__ggml_vocab_test__\n"; .out: one line of ids per string.
std::vector<Case> read_cases(const std::string& name) {
  const std::string inp = slurp(kVocabDir + name + ".inp");
  const std::string out = slurp(kVocabDir + name + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t end = inp.find(sep, pos);
    if (end == std::string::npos) break;
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (auto& c : cases) {
    if (!std::getline(lines, line)) break;
    std::istringstream ids(line);
    for (long v; ids >> v;) c.ids.push_back(static_cast<TokenId>(v));
  }
  return cases;
}

std::string show_ids(const std::vector<TokenId>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string escaped(const std::string& s) {
  std::string o;
  for (unsigned char ch : s) {
    if (ch == '\n') o += "\\n";
    else if (ch == '\t') o += "\\t";
    else if (ch < 0x20) o += "\\x" + std::to_string(ch);
    else o.push_back(static_cast<char>(ch));
  }
  return o;
}

const std::vector<std::string> kVocabFiles = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf",
                                              "ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf"};

class VocabFile : public ::testing::TestWithParam<std::string> {};

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param.substr(std::strlen("ggml-vocab-"));
  n = n.substr(0, n.find(".gguf"));
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

TEST_P(VocabFile, EncodesEveryLlamaCppVectorExactly) {
  const std::string name = GetParam();
  if (!exists(kVocabDir + name) || !exists(kVocabDir + name + ".inp") || !exists(kVocabDir + name + ".out")) return;
  const Tokenizer& tok = tokenizer_for(name);
  const std::vector<Case> cases = read_cases(name);
  ASSERT_EQ(cases.size(), 46u) << "unexpected number of test strings in " << name << ".inp";
  size_t passed = 0;
  for (const Case& c : cases) {
    const auto got = tok.encode(c.text, EncodeOptions{false, false});
    if (got == c.ids)
      ++passed;
    else
      ADD_FAILURE() << name << ": '" << escaped(c.text) << "'\n  want " << show_ids(c.ids) << "\n  got  " << show_ids(got);
  }
  RecordProperty("passed", static_cast<int>(passed));
  std::printf("%s: %zu/%zu vectors pass\n", name.c_str(), passed, cases.size());
  EXPECT_EQ(passed, cases.size());
}

TEST_P(VocabFile, DecodingTheEncodingGivesBackTheText) {
  const std::string name = GetParam();
  if (!exists(kVocabDir + name)) return;
  const Tokenizer& tok = tokenizer_for(name);
  for (const Case& c : read_cases(name)) {
    const auto ids = tok.encode(c.text, EncodeOptions{false, false});
    EXPECT_EQ(tok.decode(ids), c.text) << name << ": " << show_ids(ids);
  }
}

TEST_P(VocabFile, StreamingDetokenizerOutputEqualsWholeDecodeAndIsAlwaysValidUtf8) {
  const std::string name = GetParam();
  if (!exists(kVocabDir + name)) return;
  const Tokenizer& tok = tokenizer_for(name);
  for (const Case& c : read_cases(name)) {
    const auto ids = tok.encode(c.text, EncodeOptions{false, false});
    Detokenizer detok(tok);
    std::string streamed;
    for (TokenId id : ids) {
      const std::string part = detok.push(id);
      EXPECT_EQ(unicode::sanitize_utf8(part), part) << "invalid UTF-8 streamed for '" << escaped(c.text) << "'";
      streamed += part;
    }
    EXPECT_EQ(detok.held_bytes(), 0u);
    streamed += detok.flush();
    EXPECT_EQ(streamed, tok.decode(ids)) << name << ": '" << escaped(c.text) << "'";
  }
}

// The vectors discriminate between pre-tokenizers: with "default" instead of "llama-bpe",
// 7 cases fail here. (PROVENANCE.md: llama.cpp fails 8; its fallback for regexes without a
// hand-written matcher runs std::regex over a one-byte-per-code-point "collapsed" text, whose
// quirks chorus does not reproduce. Our Default is the exact regex semantics.)
TEST(VocabVectors, LlamaBpeVectorsFailWithTheDefaultPreTokenizer) {
  const std::string name = "ggml-vocab-llama-bpe.gguf";
  if (!exists(kVocabDir + name)) return;
  VocabSpec spec = read_vocab_spec(gguf::File::open(kVocabDir + name));
  spec.pre = "default";
  const Tokenizer tok(Vocab::build(std::move(spec)));
  size_t failed = 0;
  for (const Case& c : read_cases(name)) failed += tok.encode(c.text, EncodeOptions{false, false}) != c.ids;
  EXPECT_EQ(failed, 7u);
}

INSTANTIATE_TEST_SUITE_P(LlamaCppVocabs, VocabFile, ::testing::ValuesIn(kVocabFiles), param_name);

// --- rules from the metadata ------------------------------------------------------------------

TEST(TokenizerRules, SentencePieceVocabsAddBosAndASpacePrefix) {
  if (!exists(kVocabDir + "ggml-vocab-llama-spm.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok.vocab().kind(), VocabKind::Spm);
  EXPECT_TRUE(tok.vocab().add_bos());
  EXPECT_FALSE(tok.vocab().add_eos());
  EXPECT_TRUE(tok.vocab().add_space_prefix());
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<TokenId>{1, 15043, 3186}));
  EXPECT_EQ(tok.encode(""), (std::vector<TokenId>{1}));
  EXPECT_EQ(tok.encode("", EncodeOptions{false, false}), (std::vector<TokenId>{}));
}

TEST(TokenizerRules, Gpt2AddsNoBosAndLlama3AddsBeginOfText) {
  if (!exists(kVocabDir + "ggml-vocab-gpt-2.gguf") || !exists(kVocabDir + "ggml-vocab-llama-bpe.gguf")) return;
  const Tokenizer& gpt2 = tokenizer_for("ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(gpt2.vocab().pre_tokenizer(), PreTokenizer::Gpt2);
  EXPECT_FALSE(gpt2.vocab().add_bos());
  EXPECT_EQ(gpt2.encode("Hello world"), (std::vector<TokenId>{15496, 995}));
  const Tokenizer& l3 = tokenizer_for("ggml-vocab-llama-bpe.gguf");
  EXPECT_EQ(l3.vocab().pre_tokenizer(), PreTokenizer::Llama3);
  EXPECT_TRUE(l3.vocab().ignore_merges());
  EXPECT_EQ(l3.encode("Hello world"), (std::vector<TokenId>{128000, 9906, 1917}));
  EXPECT_TRUE(l3.vocab().is_eog(128009));  // <|eot_id|>
}

TEST(TokenizerRules, ControlTokensAreMatchedInTextOnlyWhenParsingSpecials) {
  if (!exists(kVocabDir + "ggml-vocab-llama-bpe.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-bpe.gguf");
  const std::string text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  const auto parsed = tok.encode(text, EncodeOptions{false, true});
  EXPECT_EQ(parsed, (std::vector<TokenId>{128006, 882, 128007, 271, 13347, 128009}));
  const auto plain = tok.encode(text, EncodeOptions{false, false});
  EXPECT_GT(plain.size(), parsed.size());
  for (TokenId id : plain) EXPECT_LT(id, 128000);
  EXPECT_EQ(tok.decode(parsed), "user\n\nHi");
  EXPECT_EQ(tok.decode(parsed, DecodeOptions{false, true, false}), text);
}

TEST(TokenizerRules, SpmStartsAFreshSpacePrefixAfterASpecialToken) {
  if (!exists(kVocabDir + "ggml-vocab-llama-spm.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-spm.gguf");
  // "Hello</s>world": the text after </s> gets its own leading U+2581, as the text start does.
  EXPECT_EQ(tok.encode("Hello</s>world", EncodeOptions{false, true}), (std::vector<TokenId>{15043, 2, 3186}));
}

TEST(TokenizerRules, Phi3UserDefinedTokenAlwaysMatchesAndSpecialsEatFollowingWhitespace) {
  if (!exists(kVocabDir + "ggml-vocab-phi-3.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-phi-3.gguf");
  // </s> is user-defined in this file: matched even without parse_special.
  const auto ids = tok.encode("a</s>b", EncodeOptions{false, false});
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end()) << show_ids(ids);
  // <|end|> is rstrip for phi-3: "<|end|>\n b" == "<|end|>b".
  EXPECT_EQ(tok.encode("<|user|>\n Hi<|end|>\n", EncodeOptions{false, true}),
            tok.encode("<|user|>Hi<|end|>", EncodeOptions{false, true}));
  EXPECT_TRUE(tok.vocab().is_eog(32007));  // <|end|>
}

TEST(TokenizerRules, Stories260KTokenizesAndRoundTrips) {
  if (!exists(kModels + "stories260K.gguf")) return;
  const Tokenizer tok(load_vocab(gguf::File::open(kModels + "stories260K.gguf")));
  EXPECT_EQ(tok.vocab().n_tokens(), 512u);
  EXPECT_EQ(tok.vocab().sep(), kNoToken);  // stored as 4294967295
  EXPECT_EQ(tok.vocab().pad(), kNoToken);
  const std::string text = "Once upon a time, there was a little girl named Lily.\nShe liked 🦙.";
  const auto ids = tok.encode(text);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tok.decode(std::span(ids).subspan(1)), text);
}

// --- streaming --------------------------------------------------------------------------------

TEST(Detokenizer, HoldsACharacterSplitAcrossByteTokensUntilItsLastByte) {
  if (!exists(kVocabDir + "ggml-vocab-llama-spm.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-spm.gguf");
  // 🦙 (F0 9F A6 99) is not in the LLaMA vocabulary: four byte-fallback tokens.
  const auto ids = tok.encode("🦙", EncodeOptions{false, false});
  ASSERT_EQ(ids, (std::vector<TokenId>{29871, 243, 162, 169, 156}));
  Detokenizer d(tok);
  EXPECT_EQ(d.push(ids[0]), "");  // the prefix space, stripped as the first piece
  EXPECT_EQ(d.push(ids[1]), "");
  EXPECT_EQ(d.held_bytes(), 1u);
  EXPECT_EQ(d.push(ids[2]), "");
  EXPECT_EQ(d.push(ids[3]), "");
  EXPECT_EQ(d.held_bytes(), 3u);
  EXPECT_EQ(d.push(ids[4]), "🦙");
  EXPECT_EQ(d.held_bytes(), 0u);
}

TEST(Detokenizer, BytesThatCannotFormACharacterComeOutAsReplacementCharacters) {
  if (!exists(kVocabDir + "ggml-vocab-llama-spm.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-spm.gguf");
  const TokenId cont = tok.vocab().byte_token(0x99), lead = tok.vocab().byte_token(0xF0);
  const TokenId hello = tok.vocab().find("▁Hello");
  Detokenizer d(tok);
  EXPECT_EQ(d.push(hello), "Hello");
  EXPECT_EQ(d.push(cont), "\xEF\xBF\xBD");  // a lone continuation byte
  EXPECT_EQ(d.push(lead), "");
  EXPECT_EQ(d.push(hello), "\xEF\xBF\xBD Hello");  // the lead byte's sequence broke
  EXPECT_EQ(d.push(lead), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // unfinished at the end
}

TEST(Detokenizer, KeepsTheSpaceAfterARemovedBosLikeLlamaCpp) {
  if (!exists(kVocabDir + "ggml-vocab-llama-spm.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-llama-spm.gguf");
  const auto ids = tok.encode("Hello world");  // [1, 15043, 3186]
  EXPECT_EQ(tok.decode(std::span(ids).subspan(1)), "Hello world");
  EXPECT_EQ(tok.decode(ids, DecodeOptions{true, false, false}), " Hello world");
  EXPECT_EQ(tok.decode(ids, DecodeOptions{false, true, false}), "<s> Hello world");
  Detokenizer d(tok);
  std::string s;
  for (TokenId id : std::span(ids).subspan(1)) s += d.push(id);
  EXPECT_EQ(s, "Hello world");
}

TEST(Detokenizer, Gpt2CharacterSplitAcrossTokensStreamsWhole) {
  if (!exists(kVocabDir + "ggml-vocab-gpt-2.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-gpt-2.gguf");
  const std::string text = "ក";  // Khmer KA (E1 9E 80): one GPT-2 token per byte
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids, (std::vector<TokenId>{157, 252, 222}));
  Detokenizer d(tok);
  EXPECT_EQ(d.push(ids[0]), "");
  EXPECT_EQ(d.push(ids[1]), "");
  EXPECT_EQ(d.push(ids[2]), text);
}

TEST(Detokenizer, CleanSpacesMatchesLlamaCppForPunctuationAndContractions) {
  if (!exists(kVocabDir + "ggml-vocab-gpt-2.gguf")) return;
  const Tokenizer& tok = tokenizer_for("ggml-vocab-gpt-2.gguf");
  const auto ids = tok.encode("Hello , world ! I 'm here ' ok");
  EXPECT_EQ(tok.decode(ids, DecodeOptions{false, false, true}), "Hello, world! I'm here'ok");
}

// --- pre-tokenizers ---------------------------------------------------------------------------

std::vector<std::string> words(PreTokenizer p, std::string_view text) {
  std::vector<std::string> w;
  for (auto v : pre_tokenize(p, text)) w.emplace_back(v);
  return w;
}
using W = std::vector<std::string>;

TEST(PreTokenizer, Gpt2SplitsContractionsLettersNumbersAndKeepsOneSpaceBeforeAWord) {
  EXPECT_EQ(words(PreTokenizer::Gpt2, "I'll buy 33 apples!!  Now\n\n"),
            (W{"I", "'ll", " buy", " 33", " apples", "!!", " ", " Now", "\n\n"}));
  EXPECT_EQ(words(PreTokenizer::Gpt2, "'RE you"), (W{"'", "RE", " you"}));  // contractions are case-sensitive
  EXPECT_EQ(words(PreTokenizer::Gpt2, "\t\tx"), (W{"\t", "\t", "x"}));
  EXPECT_EQ(words(PreTokenizer::Gpt2, ""), (W{}));
}

TEST(PreTokenizer, Llama3GroupsDigitsInThreesAndLeadsWordsWithAnyNonLetter) {
  EXPECT_EQ(words(PreTokenizer::Llama3, "1234567 (normal)'RE"), (W{"123", "456", "7", " (", "normal", ")'", "RE"}));
  EXPECT_EQ(words(PreTokenizer::Llama3, "'RE you"), (W{"'RE", " you"}));
  EXPECT_EQ(words(PreTokenizer::Llama3, "a \n\n  b"), (W{"a", " \n\n", " ", " b"}));
  EXPECT_EQ(words(PreTokenizer::Llama3, "ok!!\n\nx"), (W{"ok", "!!\n\n", "x"}));
}

TEST(PreTokenizer, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(words(PreTokenizer::Qwen2, "a 123"), (W{"a", " ", "1", "2", "3"}));
}

TEST(PreTokenizer, SmollmIsolatesDigitsThenAppliesGpt2) {
  EXPECT_EQ(words(PreTokenizer::Smollm, "x 42 yes"), (W{"x", " ", "4", "2", " yes"}));
}

TEST(PreTokenizer, DefaultSplitsPunctuationRunsAndThreeDigitGroups) {
  EXPECT_EQ(words(PreTokenizer::Default, "hello, 12345"), (W{"hello", ",", " ", "123", "45"}));
}

TEST(PreTokenizer, UnicodeClassesCoverLettersNumbersAndSpaces) {
  EXPECT_EQ(words(PreTokenizer::Gpt2, "Привет мир ٣٤"), (W{"Привет", " мир", " ٣٤"}));
  EXPECT_EQ(words(PreTokenizer::Gpt2, "a\u3000b"), (W{"a", "\u3000", "b"}));  // ideographic space is \s
  EXPECT_TRUE(unicode::is_letter(0x4E00));
  EXPECT_TRUE(unicode::is_number(0x0663));
  EXPECT_FALSE(unicode::is_letter('1'));
}

TEST(PreTokenizer, InvalidUtf8BytesStayInTheText) {
  const std::string text = "ab\xff\xfe cd";
  std::string joined;
  for (auto w : pre_tokenize(PreTokenizer::Llama3, text)) joined += w;
  EXPECT_EQ(joined, text);
}

TEST(Unicode, EachByteOutsideUtf8BecomesItsOwnReplacementCharacter) {
  std::string out;
  EXPECT_FALSE(unicode::replace_invalid_utf8_bytes("plain \xc3\xa9 text \xf0\x9f\x98\x80", out));
  EXPECT_TRUE(out.empty()) << "valid text must not be copied";
  const std::string fffd = "\xef\xbf\xbd";
  ASSERT_TRUE(unicode::replace_invalid_utf8_bytes("a\xff" "b\xfe\xc0" "c", out));
  EXPECT_EQ(out, "a" + fffd + "b" + fffd + fffd + "c");
  // A sequence cut short by a byte that cannot continue it: one U+FFFD per byte, as llama.cpp.
  ASSERT_TRUE(unicode::replace_invalid_utf8_bytes("\xe2\x82x\xf5\x80", out));
  EXPECT_EQ(out, fffd + fffd + "x" + fffd + fffd);
}

// Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) were dropped by byte-level BPE
// vocabularies without single-byte tokens for them (SmolLM2: "a\xffb\xfe\xc0c" gave "a b c").
// llama.cpp turns each into U+FFFD before pre-tokenizing; so must we, on every BPE vocabulary.
TEST(TokenizerRules, InvalidUtf8BytesTokenizeAsReplacementCharactersInsteadOfVanishing) {
  const std::string fffd = "\xef\xbf\xbd";
  const std::string bad = "a\xff" "b\xfe\xc0" "c d\xf8";
  const std::string replaced = "a" + fffd + "b" + fffd + fffd + "c d" + fffd;
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf"}) {
    if (!exists(kVocabDir + name)) continue;
    const Tokenizer& tok = tokenizer_for(name);
    const std::vector<TokenId> ids = tok.encode(bad, EncodeOptions{false, false});
    EXPECT_EQ(ids, tok.encode(replaced, EncodeOptions{false, false})) << name;
    EXPECT_EQ(tok.decode(ids), replaced) << name;
  }
  // SmolLM2 (fetched by scripts/fetch-models.sh smollm2): the vocabulary that lost the bytes.
  const std::string smol = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
  if (!std::filesystem::exists(smol)) return;
  const Tokenizer tok(load_vocab(gguf::File::open(smol)));
  const std::vector<TokenId> ids = tok.encode(bad, EncodeOptions{false, false});
  EXPECT_EQ(ids, tok.encode(replaced, EncodeOptions{false, false}));
  EXPECT_EQ(tok.decode(ids), replaced);
}

// --- algorithm on a hand-made vocabulary -------------------------------------------------------

VocabSpec tiny_spm() {
  VocabSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "<0x63>"};
  s.scores = {0, 0, 0, -1, -2, -2, -3, -1, -0.5f, 0};
  s.token_types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};
  return s;
}

TEST(SpmAlgorithm, MergesTheHighestScoringPairFirstAndFallsBackToBytes) {
  const Tokenizer tok(Vocab::build(tiny_spm()));
  // "ab" -> "▁ab": "ab" (-1) beats "▁a" (-3), then "▁"+"ab" (-0.5).
  EXPECT_EQ(tok.encode("ab"), (std::vector<TokenId>{1, 8}));
  // 'c' is only a byte token; 'd' has none: <unk>.
  EXPECT_EQ(tok.encode("cd", EncodeOptions{false, false}), (std::vector<TokenId>{3, 9, 0}));
}

TEST(SpmAlgorithm, EqualScoresMergeLeftmostFirst) {
  VocabSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>", "x", "xx"};
  s.scores = {0, 0, 0, -1, -1};
  s.add_space_prefix = false;
  const Tokenizer tok(Vocab::build(s));
  EXPECT_EQ(tok.encode("xxx", EncodeOptions{false, false}), (std::vector<TokenId>{4, 3}));
}

VocabSpec tiny_bpe() {
  VocabSpec s;
  s.model = "gpt2";
  s.pre = "gpt-2";
  s.tokens = {"a", "b", "Ġ", "ab", "Ġa", "Ġab", "<|endoftext|>"};
  s.token_types = {1, 1, 1, 1, 1, 1, 3};
  s.merges = {"a b", "Ġ a", "Ġa b", "Ġ ab"};
  s.eos = 6;
  s.bos = 6;
  return s;
}

TEST(BpeAlgorithm, MergesByRankNotByLength) {
  const Tokenizer tok(Vocab::build(tiny_bpe()));
  // " ab": "a b" (rank 0) first, then "Ġ ab" (rank 3): "Ġab".
  EXPECT_EQ(tok.encode(" ab"), (std::vector<TokenId>{5}));
  EXPECT_EQ(tok.decode(tok.encode(" ab ba")), " ab ba");
}

// --- bad metadata -----------------------------------------------------------------------------

void expect_vocab_error(VocabSpec s, const std::string& must_contain) {
  try {
    (void)Vocab::build(std::move(s));
    ADD_FAILURE() << "expected a VocabError mentioning '" << must_contain << "'";
  } catch (const VocabError& e) {
    EXPECT_NE(std::string(e.what()).find(must_contain), std::string::npos) << e.what();
  }
}

TEST(VocabErrors, SpecialIdOutsideTheVocabularyNamesTheKey) {
  VocabSpec s = tiny_spm();
  s.bos = 10;
  expect_vocab_error(s, "tokenizer.ggml.bos_token_id = 10 is outside the vocabulary of 10 tokens");
  s = tiny_spm();
  s.eot = -5;
  expect_vocab_error(s, "tokenizer.ggml.eot_token_id");
}

TEST(VocabErrors, AllOnesAndMinusOneMeanNoToken) {
  VocabSpec s = tiny_spm();
  s.sep = 0xFFFFFFFFll;
  s.pad = -1;
  const Vocab v = Vocab::build(s);
  EXPECT_EQ(v.sep(), kNoToken);
  EXPECT_EQ(v.pad(), kNoToken);
}

TEST(VocabErrors, MalformedArraysAndNamesAreRejected) {
  VocabSpec s = tiny_spm();
  s.scores.pop_back();
  expect_vocab_error(s, "tokenizer.ggml.scores has 9 entries (expected 10");
  s = tiny_spm();
  s.token_types[4] = 42;
  expect_vocab_error(s, "tokenizer.ggml.token_type[4] = 42");
  s = tiny_spm();
  s.model = "bert";
  expect_vocab_error(s, "tokenizer.ggml.model = 'bert'");
  s = tiny_spm();
  s.tokens.clear();
  s.scores.clear();
  s.token_types.clear();
  expect_vocab_error(s, "tokenizer.ggml.tokens is empty");
  VocabSpec b = tiny_bpe();
  b.pre = "klingon";
  expect_vocab_error(b, "tokenizer.ggml.pre = 'klingon'");
  b = tiny_bpe();
  b.merges.clear();
  expect_vocab_error(b, "tokenizer.ggml.merges");
  b = tiny_bpe();
  b.merges[1] = "nospace";
  expect_vocab_error(b, "tokenizer.ggml.merges[1]");
  b = tiny_bpe();
  b.bos.reset();
  b.add_bos = true;
  expect_vocab_error(b, "tokenizer.ggml.add_bos_token is true but there is no BOS token");
}

// A copy of stories260K.gguf with its BOS id patched to 9999: loading names file and key.
TEST(VocabErrors, BadBosInARealFileNamesTheFileAndTheKey) {
  const std::string src = kModels + "stories260K.gguf";
  if (!exists(src)) return;
  std::string bytes = slurp(src);
  const std::string key = "tokenizer.ggml.bos_token_id";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const size_t type_at = at + key.size();
  uint32_t type = 0;
  std::memcpy(&type, bytes.data() + type_at, 4);
  ASSERT_EQ(type, 4u) << "expected the BOS id stored as u32";
  const uint32_t bad = 9999;
  std::memcpy(bytes.data() + type_at + 4, &bad, 4);
  const auto path = std::filesystem::temp_directory_path() / "chorus-test-bad-bos.gguf";
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    (void)load_vocab(gguf::File::open(path.string()));
    ADD_FAILURE() << "a BOS id of 9999 in a 512-token vocabulary loaded";
  } catch (const VocabError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer.ggml.bos_token_id = 9999"), std::string::npos) << msg;
  }
  std::filesystem::remove(path);
}

// --- the command ------------------------------------------------------------------------------

std::string run_capture(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  status = pclose(p);
  return out;
}

TEST(TokenizeCommand, PrintsIdsAndLlamaTokenizeStyleLines) {
  const std::string model = kVocabDir + "ggml-vocab-llama-spm.gguf";
  if (!exists(model)) return;
  int status = -1;
  EXPECT_EQ(run_capture(std::string(CHORUS_BINARY) + " tokenize -m '" + model + "' -p 'Hello world' --ids", status),
            "[1, 15043, 3186]\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run_capture(std::string(CHORUS_BINARY) + " tokenize -m '" + model + "' -p 'Hello world'", status),
            "     1 -> '<s>'\n 15043 -> ' Hello'\n  3186 -> ' world'\n");
  EXPECT_EQ(run_capture(std::string(CHORUS_BINARY) + " tokenize -m '" + model + "' -p 'Hello' --no-bos --ids", status),
            "[15043]\n");
}

TEST(TokenizeCommand, AMissingModelIsOneErrorLineAndExitStatusOne) {
  int status = -1;
  const std::string out = run_capture(std::string(CHORUS_BINARY) + " tokenize -m /nonexistent.gguf -p x 2>&1", status);
  EXPECT_NE(out.find("/nonexistent.gguf"), std::string::npos) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

}  // namespace
}  // namespace chorus
