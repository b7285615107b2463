// Tokenizer tests: exact ids, checked against reference outputs and against the reference libraries.
//
// Expected ids for Llama-3 (tiktoken), SmolLM2 (HF tokenizers), Llama-2 (sentencepiece) and the two small
// tokenizer.json fixtures in this folder were computed with the Python libraries, not with liger:
// tests/data/make_tokenizer_references.py prints every table below (tokenizers 0.23.3, tiktoken 0.14.0,
// sentencepiece 0.2.0; its docstring has the commands). stories260K's expected ids are its reference_outputs.json.
// Tests that need the big tokenizers or the texts in ../shared/data skip, visibly, when those are absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "core/check.h"
#include "core/json.h"
#include "data/tokenizer.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

namespace fs = std::filesystem;

// stories260K's files are in the repository; the big tokenizers and the texts in ../shared.
const std::string kTok512 = test::source_path("assets/stories260K/tok512.model");
const std::string kStories = test::source_path("assets/stories260K");
const std::string kLlama2 = test::shared_path("data/tokenizers/llama2/tokenizer.model");
const std::string kLlama3 = test::shared_path("data/tokenizers/llama3/tokenizer.model");
const std::string kSmolLM2 = test::shared_path("data/tokenizers/smollm2/tokenizer.json");
const std::string kTextDir = test::shared_path("data/text");

#define SKIP_IF_ABSENT(path) \
  if (!fs::exists(path)) GTEST_SKIP() << "needs " << (path) << " (absent)"

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

// What a generation loop prints: decode_piece of each token after the previous one.
std::string streamed(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string text;
  int32_t prev = -1;
  for (int32_t id : ids) {
    text += tok.decode_piece(prev, id);
    prev = id;
  }
  return text;
}

std::vector<int32_t> ids_of(const Json& j) {
  return j.get<std::vector<int32_t>>();
}

// h = h * 1000003 + id (mod 2^64), as make_tokenizer_references.py computes it.
uint64_t fingerprint(const std::vector<int32_t>& ids) {
  uint64_t h = 0;
  for (int32_t id : ids) h = h * 1000003u + static_cast<uint64_t>(id);
  return h;
}

// The message of the Error that `fn` throws ("" if it throws none).
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

// Token counts and fingerprints of each text file, from the reference libraries.
struct TextFileReference {
  std::string name;
  size_t smollm2_count;
  uint64_t smollm2_fingerprint;
  size_t llama3_count;
  uint64_t llama3_fingerprint;
};
const std::vector<TextFileReference> kTextFiles = {
    {"LICENSE-Apache-2.0.txt", 2215, 0xe53a252f990c5d92ull, 2268, 0x164544d8e84173f9ull},
    {"alpaca_cleaned_first5000.json", 898555, 0x6196be682e7be0cfull, 868394, 0x31bdececbbe2d0f8ull},
    {"alpaca_en_demo_999.json", 192284, 0x17a0d82b92627919ull, 186533, 0x734efd411c391c3full},
    {"tinyshakespeare.txt", 341094, 0x21ac28f67254bbddull, 301768, 0xf9844ceb45b46d37ull},
    {"tinystories_valid_head.txt", 193745, 0x31ebbac9ad1eb0bcull, 186044, 0x367b99204c4b28a4ull},
    {"wikitext2_raw_test.txt", 304830, 0x85737091b11fe72aull, 288936, 0x0ffe644b00534a77ull},
    {"wikitext2_tokens_test.txt", 312144, 0x678a2b5fc591d4b9ull, 299667, 0x9abc1125632a5e4bull},
    {"wikitext2_tokens_valid.txt", 273868, 0x5eae637cfbd3ef49ull, 262066, 0xfb6965eb0d73adacull},
};

// Every file of shared/data/text round-trips exactly; the ones in kTextFiles also give the reference libraries'
// ids (count and fingerprint).
void check_text_files(const Tokenizer& tok, bool llama3) {
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(kTextDir)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    std::string name = entry.path().filename().string();
    std::string text = read_file(entry.path().string());
    std::vector<int32_t> ids = tok.encode(text, false);
    // Plausible counts for these English texts: 1.5 to 8 bytes per token.
    EXPECT_GT(ids.size(), 0u) << name;
    EXPECT_GT(ids.size(), text.size() / 8) << name;
    EXPECT_LT(ids.size(), text.size() / 3 * 2) << name;
    std::string back = tok.decode(ids);
    if (back != text) {
      size_t i = 0;
      while (i < back.size() && i < text.size() && back[i] == text[i]) ++i;
      ADD_FAILURE() << name << ": decode(encode(text)) differs from the text at byte " << i << " of " << text.size();
    }
    for (const TextFileReference& ref : kTextFiles) {
      if (ref.name != name) continue;
      EXPECT_EQ(ids.size(), llama3 ? ref.llama3_count : ref.smollm2_count) << name;
      EXPECT_EQ(fingerprint(ids), llama3 ? ref.llama3_fingerprint : ref.smollm2_fingerprint) << name;
    }
  }
  EXPECT_GE(files, kTextFiles.size());
}

// ---- SentencePiece: stories260K's tok512.model ----

TEST(SentencePiece, Tok512MatchesReferenceOutputs) {
  auto tok = load_tokenizer_file(kTok512);
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);

  Json ref = read_json_file(kStories + "/reference_outputs.json");
  const Json& dog = ref.at("prompt_dog_60");
  EXPECT_EQ(tok->encode(dog.at("prompt").get<std::string>(), true), ids_of(dog.at("prompt_ids_with_bos")));
  // A record's "text" is the decode of its prompt ids (with BOS) followed by its generated ids: bos_only_256's
  // prompt is BOS alone, so there the text is also the decode of the generated ids.
  for (const char* name : {"bos_only_256", "prompt_dog_60"}) {
    const Json& r = ref.at(name);
    std::vector<int32_t> ids = ids_of(r.at("prompt_ids_with_bos"));
    std::vector<int32_t> generated = ids_of(r.at("greedy_generated_ids"));
    ids.insert(ids.end(), generated.begin(), generated.end());
    const std::string text = r.at("text").get<std::string>();
    EXPECT_EQ(tok->decode(ids), text) << name;
    EXPECT_EQ(streamed(*tok, ids), text) << name;
  }
  const Json& bos_only = ref.at("bos_only_256");
  EXPECT_EQ(tok->decode(ids_of(bos_only.at("greedy_generated_ids"))), bos_only.at("text").get<std::string>());
}

TEST(SentencePiece, Tok512EncodeDecode) {
  auto tok = load_tokenizer_file(kTok512);
  const std::string text = "Once upon a time, a little dog named Max saw a big box.";
  std::vector<int32_t> ids = tok->encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->encode(text, false), std::vector<int32_t>(ids.begin() + 1, ids.end()));
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(streamed(*tok, ids), text);
  // Byte fallback: characters outside the 512 pieces become <0xXX> byte tokens (id = byte + 3).
  ids = tok->encode("caf\u00e9 \U0001F600", false);
  EXPECT_EQ(tok->decode(ids), "caf\u00e9 \U0001F600");
  EXPECT_EQ(streamed(*tok, ids), "caf\u00e9 \U0001F600");
  EXPECT_EQ(tok->token_to_id("<s>"), 1);
  EXPECT_EQ(tok->token_to_id("no such piece"), -1);
  EXPECT_FALSE(tok->is_eos(1));
  EXPECT_TRUE(tok->is_eos(2));
}

TEST(SentencePiece, ModelDirectoryWithConfig) {
  auto tok = load_tokenizer(kStories + "/hf");  // tokenizer.model (SentencePiece) and config.json
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({2}));
}

// Llama-2's model: pieces of several spaces ("\u2581\u2581"), byte fallback, a newline first.
TEST(SentencePiece, Llama2MatchesSentencePieceLibrary) {
  SKIP_IF_ABSENT(kLlama2);
  auto tok = load_tokenizer_file(kLlama2);
  EXPECT_EQ(tok->vocab_size(), 32000);
  const std::vector<Case> cases = {
      {"Hello world", {1, 15043, 3186}},
      {"  two  spaces and caf\u00e9 \U0001f600",
       {1, 259, 1023, 29871, 8162, 322, 274, 28059, 29871, 243, 162, 155, 131}},
      {"\nnew line first", {1, 29871, 13, 1482, 1196, 937}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok->encode(c.text, true), c.ids) << c.text;
    EXPECT_EQ(tok->decode(c.ids), c.text) << c.text;
    EXPECT_EQ(streamed(*tok, c.ids), c.text) << c.text;
  }
}

// ---- tiktoken: Llama-3's tokenizer.model ----

TEST(Tiktoken, Llama3KnownIds) {
  SKIP_IF_ABSENT(kLlama3);
  auto tok = load_tokenizer_file(kLlama3);
  EXPECT_EQ(tok->kind(), "tiktoken");
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->encode("Hello", false), std::vector<int32_t>({9906}));
  EXPECT_EQ(tok->encode(" world", false), std::vector<int32_t>({1917}));
  EXPECT_EQ(tok->encode(" the", false), std::vector<int32_t>({279}));
  EXPECT_EQ(tok->encode("<|begin_of_text|>Hello<|eot_id|>", false), std::vector<int32_t>({128000, 9906, 128009}));
  EXPECT_EQ(tok->encode("Hello", true), std::vector<int32_t>({128000, 9906}));
  EXPECT_EQ(tok->decode({128006}), "<|start_header_id|>");
  EXPECT_EQ(tok->decode({128255}), "<|reserved_special_token_250|>");
  EXPECT_EQ(tok->token_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(tok->token_to_id("<|reserved_special_token_5|>"), 128010);
  // Meta's defaults: BOS <|begin_of_text|>, EOS <|end_of_text|>, and <|eot_id|> also ends a turn.
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_EQ(tok->eos_id(), 128001);
  EXPECT_TRUE(tok->is_eos(128001));
  EXPECT_TRUE(tok->is_eos(128009));
  EXPECT_FALSE(tok->is_eos(128000));
  // Bytes that are not UTF-8 fall between the regex matches and still round-trip as byte tokens; streaming returns
  // the bytes of a character split over two tokens as they come.
  const std::string invalid = "ok \xff\xfe caf\xc3 \xe2\x82";
  EXPECT_EQ(tok->decode(tok->encode(invalid, false)), invalid);
  EXPECT_EQ(streamed(*tok, tok->encode(invalid, false)), invalid);
}

TEST(Tiktoken, Llama3MatchesTiktokenLibrary) {
  SKIP_IF_ABSENT(kLlama3);
  auto tok = load_tokenizer_file(kLlama3);
  const std::vector<Case> cases = {
      {"Hello world", {9906, 1917}},
      {"I'm sure DON'T you'll we've THEY'RE it's",
       {40, 2846, 2771, 45373, 17773, 499, 3358, 584, 3077, 63593, 95253, 433, 596}},
      {"12345 and 3.14159, 1,000,000", {4513, 1774, 323, 220, 18, 13, 9335, 2946, 11, 220, 16, 11, 931, 11, 931}},
      {"tabs\tand  multiple   spaces\n\n\nnew lines\r\n end  ",
       {32093, 53577, 220, 5361, 256, 12908, 1432, 943, 5238, 319, 842, 256}},
      {"h\u00e9llo w\u00f6rld \u2014 na\u00efve caf\u00e9 e\u0301",
       {71, 19010, 385, 289, 9603, 509, 2001, 95980, 588, 53050, 384, 54939}},
      {"\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u4e2d\u6587 \ud55c\uad6d\uc5b4",
       {102433, 102158, 16144, 57933, 62903, 71634, 5486, 108891, 104008, 32179}},
      {"emoji \U0001f600\U0001f44d\U0001f3fd family \U0001f468\u200d\U0001f469\u200d\U0001f467!",
       {38623, 91416,  9468, 239, 235, 9468,   237,  121, 3070, 62904,
        101,   102470, 9468, 239, 102, 102470, 9468, 239, 100,  0}},
      {"a\u00a0b\u0085c\u2028d \u3000e", {64, 115648, 116360, 66, 378, 101, 67, 220, 23249, 68}},
      {"def f(x):\n    return x**2  # square\n", {755, 282, 2120, 997, 262, 471, 865, 334, 17, 220, 674, 9518, 198}},
      {"<|im_start|>user\nHi there<|im_end|>\n",
       {27, 91, 318, 5011, 91, 29, 882, 198, 13347, 1070, 27, 91, 318, 6345, 91, 397}},
      {"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
       {128000, 128006, 882, 128007, 271, 13347, 128009}},
      {"\u0161\u0165\u017e \u0391\u03b8\u03ae\u03bd\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 "
       "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
       {105109, 12453, 124328, 116050, 110356}},
      {"x'S 'Ll 'veRY '\u017f", {87, 13575, 364, 43, 75, 364, 588, 11492, 364, 129, 123}},
      {"Z\u180e's \u180e}\t !\u0085! x", {57, 157, 254, 236, 6, 82, 87189, 254, 236, 92, 197, 758, 116360, 0, 865}},
      {"\u0130!\r\n\u180e'llZ\U0001d400\U0001f600<|eot_id|>\034\035!\037",
       {48880, 46726, 157, 254, 236, 6, 657, 57, 57352, 238, 222, 76460, 222, 128009, 216, 217, 0, 219}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok->encode(c.text, false), c.ids) << c.text;
    EXPECT_EQ(tok->decode(c.ids), c.text) << c.text;
    EXPECT_EQ(streamed(*tok, c.ids), c.text) << c.text;
  }
}

TEST(Tiktoken, Llama3ConcurrentEncode) {
  SKIP_IF_ABSENT(kLlama3);
  auto tok = load_tokenizer_file(kLlama3);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Thread " + std::to_string(i) + " says: caf\u00e9 \U0001F600 don't stop!\n";
  const std::vector<int32_t> expected = tok->encode(text, true);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) got[t] = tok->encode(text, true);
    });
  }
  for (std::thread& th : threads) th.join();
  for (const auto& ids : got) EXPECT_EQ(ids, expected);
}

TEST(Tiktoken, Llama3TextFiles) {
  SKIP_IF_ABSENT(kLlama3);
  SKIP_IF_ABSENT(kTextDir);
  check_text_files(*load_tokenizer_file(kLlama3), true);
}

TEST(Tiktoken, Llama3ModelDirectory) {
  SKIP_IF_ABSENT(kLlama3);
  test::TempDir dir("tok");
  fs::create_symlink(fs::absolute(kLlama3), dir.file("tokenizer.model"));
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "tiktoken");
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({128001, 128009}));
  // An instruct model's config names <|eot_id|> first; <|end_of_text|> stays a stop token.
  write_file(dir.file("config.json"), R"({"bos_token_id": 128000, "eos_token_id": [128009, 128008]})");
  tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->eos_id(), 128009);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({128009, 128008, 128001}));
}

// ---- HF tokenizer.json: SmolLM2 ----

TEST(HfBpe, SmolLM2MatchesTokenizersLibrary) {
  SKIP_IF_ABSENT(kSmolLM2);
  auto tok = load_tokenizer_file(kSmolLM2);
  EXPECT_EQ(tok->kind(), "hf-bpe");
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), -1);  // post_processor null: SmolLM2 adds no BOS
  EXPECT_EQ(tok->token_to_id("<|im_end|>"), 2);
  const std::vector<Case> cases = {
      {"Hello world", {19556, 905}},
      {"I'm sure DON'T you'll we've THEY'RE it's",
       {57, 5248, 2090, 422, 2154, 23, 68, 346, 3060, 392, 3543, 6462, 73, 23, 3256, 357, 506}},
      {"12345 and 3.14159, 1,000,000",
       {33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41, 28, 216, 33, 28, 32, 32, 32, 28, 32, 32, 32}},
      {"tabs\tand  multiple   spaces\n\n\nnew lines\r\n end  ",
       {100, 7366, 197, 397, 216, 2701, 256, 5600, 1116, 198, 2241, 3204, 2738, 1112, 256}},
      {"h\u00e9llo w\u00f6rld \u2014 na\u00efve caf\u00e9 e\u0301",
       {88, 2756, 31394, 267, 29989, 400, 1841, 15486, 46494, 37366, 297, 151, 219}},
      {"\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u4e2d\u6587 \ud55c\uad6d\uc5b4",
       {23274, 115,   40993, 179,   120, 248,   26453, 11100, 224, 10391, 251, 10391, 134, 11100,
        226,   29917, 28589, 29184, 216, 33085, 246,   181,   130, 251,   183, 240,   129}},
      {"emoji \U0001f600\U0001f44d\U0001f3fd family \U0001f468\u200d\U0001f469\u200d\U0001f467!",
       {391, 33777, 40303, 218,   10813, 235, 231, 10813, 233,   138, 1564, 15107, 235,
        118, 321,   231,   10813, 235,   119, 321, 231,   10813, 235, 117,  17}},
      {"a\u00a0b\u0085c\u2028d \u3000e", {81, 15442, 82, 141, 223, 83, 321, 118, 84, 216, 12109, 218, 85}},
      {"def f(x):\n    return x**2  # square\n",
       {1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 5222, 198}},
      {"<|im_start|>user\nHi there<|im_end|>\n", {1, 4093, 198, 26843, 665, 2, 198}},
      {"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
       {44,  108, 21083, 79,    1714, 79,  2692, 108, 21198, 108, 3738,  79, 12476, 79, 311, 108, 46,  4093, 44,
        108, 486, 79,    12476, 79,   311, 108,  46,  198,   198, 26843, 44, 108,   85, 320, 79,  311, 108,  46}},
      {"\u0161\u0165\u017e \u0391\u03b8\u03ae\u03bd\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 "
       "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
       {20848, 144,  115,   43421, 5664, 235,   25760, 48438, 11517, 8998,  5470,
        246,   6485, 39511, 16464, 6511, 27819, 34966, 20602, 31462, 23339, 43463}},
      {"x'S 'Ll 'veRY '\u017f", {104, 23, 67, 637, 60, 92, 637, 307, 24625, 637, 144, 140}},
      {"Z\u180e's \u180e}\t !\u0085! x",
       {74, 172, 250, 232, 23, 99, 15822, 250, 232, 109, 197, 5728, 141, 223, 17, 1792}},
      {"\u0130!\r\n\u180e'llZ\U0001d400\U0001f600<|eot_id|>\034\035!\037",
       {143, 125, 17, 201, 198, 172, 250, 232, 23,  764, 74,  45100, 218, 10813,
        242, 218, 44, 108, 85,  320, 79,  311, 108, 46,  213, 17,    215}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok->encode(c.text, true), c.ids) << c.text;
    // SmolLM2 has no token for 21 byte values (shared/data/README.md); in UTF-8 text only the control characters
    // 0x04 0x06 0x13 0x14 0x16 0x1D can occur. Like HF tokenizers, the encoder drops them.
    const std::string dropped = "\x04\x06\x13\x14\x16\x1d";
    std::string text;
    for (char ch : c.text) {
      if (dropped.find(ch) == std::string::npos) text += ch;
    }
    EXPECT_EQ(tok->decode(c.ids), text) << c.text;
    EXPECT_EQ(streamed(*tok, c.ids), text) << c.text;
  }
}

TEST(HfBpe, SmolLM2TextFiles) {
  SKIP_IF_ABSENT(kSmolLM2);
  SKIP_IF_ABSENT(kTextDir);
  check_text_files(*load_tokenizer_file(kSmolLM2), false);
}

TEST(HfBpe, SmolLM2ModelDirectory) {
  SKIP_IF_ABSENT(kSmolLM2);
  test::TempDir dir("tok");
  fs::create_symlink(fs::absolute(kSmolLM2), dir.file("tokenizer.json"));
  write_file(dir.file("config.json"), R"({"bos_token_id": 1, "eos_token_id": 2})");
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), -1);  // config.json names one, but SmolLM2's tokenizer never adds it
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({2}));
  write_file(dir.file("tokenizer_config.json"), R"({"add_bos_token": true, "eos_token": "<|endoftext|>"})");
  tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({2, 0}));
  EXPECT_EQ(tok->encode("Hi", true), std::vector<int32_t>({1, 26843}));
}

// ---- HF tokenizer.json: small fixtures for the options SmolLM2 does not use ----

// NFC normalizer, Split regex pre_tokenizer, ByteLevel without regex, ignore_merges, merges as "a b" strings,
// a non-special added token, BOS from a TemplateProcessing post_processor (like Llama-3's tokenizer.json).
TEST(HfBpe, FixtureSplitNfcIgnoreMerges) {
  auto tok = load_tokenizer_file(test::source_path("tests/data/hf_bpe_split_nfc.json"));
  EXPECT_EQ(tok->bos_id(), 0);
  const std::vector<Case> cases = {
      {"abc", {0, 15}},
      {" abc", {0, 16, 13}},
      {"12312", {0, 17, 10, 17}},
      {"cafe\u0301", {0, 20, 18}},
      {"ab<sep>c", {0, 14, 1, 4}},
      {"<s>ab", {0, 0, 14}},
      {"a\n\nb", {0, 2, 7, 7, 3}},
      {"axb", {0, 14}},
  };
  for (const Case& c : cases) EXPECT_EQ(tok->encode(c.text, true), c.ids) << c.text;
  EXPECT_EQ(tok->decode({0, 20, 18, 7, 1}), "<s>caf\u00e9\n<sep>");
}

// Digits (runs), ByteLevel with add_prefix_space and the GPT-2 regex, merges as pairs, unk_token with fuse_unk.
TEST(HfBpe, FixtureGpt2Style) {
  auto tok = load_tokenizer_file(test::source_path("tests/data/hf_bpe_gpt2_style.json"));
  EXPECT_EQ(tok->bos_id(), -1);
  const std::vector<Case> cases = {
      {"ab", {9}},     {"a's", {8, 10}},      {"12", {11, 5}}, {"a12b", {8, 11, 5, 1, 3}},
      {"xyz", {1, 0}}, {"ab  ab", {9, 1, 9}},
  };
  for (const Case& c : cases) EXPECT_EQ(tok->encode(c.text, true), c.ids) << c.text;
}

// ---- files of the wrong kind: one Error naming the file ----

TEST(BadInput, RandomBytesAsTokenizerModel) {
  test::TempDir dir("tok");
  std::mt19937 rng(1234);
  std::string bytes(4096, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  write_file(dir.file("tokenizer.model"), bytes);
  EXPECT_THROW(load_tokenizer(dir.path()), Error);
  std::string msg = error_of([&] { load_tokenizer(dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.model") + ": not a SentencePiece model"), std::string::npos) << msg;
}

TEST(BadInput, EmptyJsonObjectAsTokenizerJson) {
  test::TempDir dir("tok");
  write_file(dir.file("tokenizer.json"), "{}");
  EXPECT_THROW(load_tokenizer(dir.path()), Error);
  std::string msg = error_of([&] { load_tokenizer(dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.json") + ": not a Hugging Face tokenizer.json"), std::string::npos) << msg;
}

TEST(BadInput, TiktokenFileWithBadBase64Line) {
  test::TempDir dir("tok");
  write_file(dir.file("tokenizer.model"), "IQ== 0\nIg== 1\nnot*base64 2\n");
  EXPECT_THROW(load_tokenizer(dir.path()), Error);
  std::string msg = error_of([&] { load_tokenizer(dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.model") + ":3: not a tiktoken line"), std::string::npos) << msg;
}

TEST(BadInput, TiktokenFileAsTokenizerJson) {
  SKIP_IF_ABSENT(kLlama3);
  test::TempDir dir("tok");
  fs::create_symlink(fs::absolute(kLlama3), dir.file("tokenizer.json"));
  std::string msg = error_of([&] { load_tokenizer(dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.json") + ": invalid JSON"), std::string::npos) << msg;
}

TEST(BadInput, UnsupportedTokenizerJson) {
  test::TempDir dir("tok");
  const std::string path = dir.file("tokenizer.json");
  const std::string byte_level = R"("pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"})";
  const std::string bpe = R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  const std::map<std::string, std::string> files = {
      {R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})", "unsupported model type 'WordPiece'"},
      {R"({"normalizer": {"type": "Lowercase"}, )" + bpe + "}", "unsupported normalizer 'Lowercase'"},
      {R"({"pre_tokenizer": {"type": "Metaspace"}, )" + bpe + "}", "unsupported pre_tokenizer 'Metaspace'"},
      {R"({"pre_tokenizer": {"type": "ByteLevel"}, )" + bpe + "}", "unsupported decoder 'null'"},
      {R"({"pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "WordPiece"}, )" + bpe + "}",
       "unsupported decoder 'WordPiece'"},
      {"{" + byte_level + R"(, "model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []}})",
       "unsupported BPE option 'byte_fallback: true'"},
      {"{" + byte_level + ", " + bpe + R"(, "added_tokens": [{"id": 1, "content": "<mask>", "lstrip": true}]})",
       "unsupported added token option 'lstrip on <mask>'"},
      {"{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})",
       "merge #0 'a b' uses a token that is not in the vocabulary"},
      {"{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})",
       "malformed tokenizer.json"},
      {R"([1, 2, 3])", "not a Hugging Face tokenizer.json"},
  };
  for (const auto& [json, expected] : files) {
    write_file(path, json);
    std::string msg = error_of([&] { load_tokenizer_file(path); });
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  }
}

TEST(BadInput, MissingFilesAndIds) {
  test::TempDir dir("tok");
  EXPECT_THROW(load_tokenizer(dir.path()), Error);  // no tokenizer file
  EXPECT_THROW(load_tokenizer(dir.file("absent")), Error);
  EXPECT_THROW(load_tokenizer_file(dir.file("absent.model")), Error);
  auto tok = load_tokenizer_file(kTok512);
  EXPECT_THROW(tok->decode({512}), Error);
  EXPECT_THROW(tok->decode_piece(-1, -1), Error);
  write_file(dir.file("tokenizer.model"), read_file(kTok512));
  write_file(dir.file("config.json"), R"({"eos_token_id": 600})");
  std::string msg = error_of([&] { load_tokenizer(dir.path()); });
  EXPECT_NE(msg.find(dir.file("config.json") + ": 'eos_token_id' = 600 is outside"), std::string::npos) << msg;
}

}  // namespace
}  // namespace liger
