// Dataset tests: Alpaca templates and loss masking with the real stories260K SentencePiece tokenizer, reading the real
// Alpaca files in ../shared/data/text, bad-record handling, packing rules in both modes, the seeded validation split
// and the global epoch order. Expected counts of the real files were computed with Python's json module (not liger):
// alpaca_cleaned_first5000.json: 5000 records, 1990 with a non-empty input; alpaca_en_demo_999.json: 999 records, 412;
// tinystories_valid_head.txt: 4302 paragraphs (runs of non-blank lines).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "core/check.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "tests/common/test_util.h"

namespace liger {
namespace {

namespace fs = std::filesystem;

const std::string kAlpaca5000 = test::shared_path("data/text/alpaca_cleaned_first5000.json");
const std::string kAlpaca999 = test::shared_path("data/text/alpaca_en_demo_999.json");
const std::string kStories = test::source_path("assets/text/tinystories_valid_head.txt");

#define SKIP_IF_ABSENT(path) \
  if (!fs::exists(path)) GTEST_SKIP() << "needs " << (path) << " (absent)"

const Tokenizer& tok() {
  static std::unique_ptr<Tokenizer> t = load_tokenizer(test::source_path("assets/stories260K/hf"));
  return *t;
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A document of `len` distinct tokens starting at `first`; the first `masked` labels are -100.
Sample doc(int32_t first, int len, int masked = 0) {
  Sample s;
  for (int i = 0; i < len; i++) {
    s.tokens.push_back(first + i);
    s.labels.push_back(i < masked ? kIgnoreIndex : first + i);
  }
  return s;
}

DataConfig config_for(const std::string& path) {
  DataConfig c;
  c.path = path;
  c.validation_fraction = 0.0;
  return c;
}

// ---- templates and tokenization --------------------------------------------------------------------------------

TEST(AlpacaTemplate, ExactTextWithoutAndWithInput) {
  AlpacaRecord r{"Give three tips for staying healthy.", "", "Eat well."};
  EXPECT_EQ(alpaca_prompt(r),
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n");
  r = {"Translate to French.", "Good morning", "Bonjour"};
  EXPECT_EQ(alpaca_prompt(r),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write "
            "a response that appropriately completes the request.\n\n### Instruction:\nTranslate to French.\n\n"
            "### Input:\nGood morning\n\n### Response:\n");
  // The reference tests input == '' only: a blank-looking input still takes the with-input template.
  r.input = " ";
  EXPECT_NE(alpaca_prompt(r).find("paired with an input"), std::string::npos);
  EXPECT_NE(alpaca_prompt(r).find("### Input:\n \n\n### Response:\n"), std::string::npos);
}

TEST(AlpacaTokenize, PromptMaskedAnswerAndEosSupervised) {
  const Tokenizer& t = tok();
  ASSERT_GE(t.bos_id(), 0);
  ASSERT_GE(t.eos_id(), 0);
  const AlpacaRecord r{"Tell a story.", "", "Once upon a time, a cat sat."};
  const Sample s = tokenize_alpaca(t, r);
  const std::vector<int32_t> prompt = t.encode(alpaca_prompt(r), true);
  const std::vector<int32_t> answer = t.encode(r.output, false);
  ASSERT_GT(prompt.size(), 10u);
  ASSERT_GT(answer.size(), 3u);
  EXPECT_EQ(s.tokens, concat(concat(prompt, answer), {t.eos_id()}));
  ASSERT_EQ(s.labels.size(), s.tokens.size());
  EXPECT_EQ(s.tokens.front(), t.bos_id());
  EXPECT_EQ(s.tokens.back(), t.eos_id());
  for (size_t i = 0; i < prompt.size(); i++) EXPECT_EQ(s.labels[i], kIgnoreIndex) << "prompt position " << i;
  for (size_t i = prompt.size(); i < s.tokens.size(); i++) EXPECT_EQ(s.labels[i], s.tokens[i]) << "answer " << i;
  // The supervised part decodes back to the output (the EOS decodes to nothing).
  EXPECT_EQ(t.decode(std::vector<int32_t>(s.tokens.begin() + prompt.size(), s.tokens.end())), r.output);
}

// SentencePiece adds its dummy-prefix space to the separately encoded answer: the sample is not encode(prompt+output).
TEST(AlpacaTokenize, SeparateEncodingIsNotTheConcatenatedEncoding) {
  const Tokenizer& t = tok();
  const AlpacaRecord r{"Tell a story.", "", "Once upon a time, a cat sat."};
  const Sample s = tokenize_alpaca(t, r);
  const std::vector<int32_t> prompt = t.encode(alpaca_prompt(r), true);
  const std::vector<int32_t> joined = concat(t.encode(alpaca_prompt(r) + r.output, true), {t.eos_id()});
  EXPECT_NE(s.tokens, joined);
  // The first answer token carries the ▁ (a space when it follows the prompt's last token) ...
  const std::string piece = t.decode_piece(prompt.back(), s.tokens[prompt.size()]);
  ASSERT_FALSE(piece.empty());
  EXPECT_EQ(piece[0], ' ') << "piece '" << piece << "'";
  // ... so the whole sample decodes with a space after "### Response:\n", which the joined encoding does not have.
  EXPECT_EQ(t.decode(s.tokens), alpaca_prompt(r) + " " + r.output);
  EXPECT_EQ(t.decode(joined), alpaca_prompt(r) + r.output);
}

TEST(TextTokenize, BosTextEosAllSupervised) {
  const Tokenizer& t = tok();
  const Sample s = tokenize_text(t, "Lily had a red ball.");
  EXPECT_EQ(s.tokens, concat(t.encode("Lily had a red ball.", true), {t.eos_id()}));
  EXPECT_EQ(s.labels, s.tokens);
  EXPECT_EQ(s.tokens.front(), t.bos_id());
}

// ---- UTF-8 -----------------------------------------------------------------------------------------------------

TEST(Utf8, ValidatorFindsTheFirstBadByte) {
  EXPECT_EQ(utf8_invalid_at("plain ascii"), std::string::npos);
  EXPECT_EQ(utf8_invalid_at("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"), std::string::npos);
  EXPECT_EQ(utf8_invalid_at("ab\xFF"), 2u);              // never valid
  EXPECT_EQ(utf8_invalid_at("a\x80"), 1u);               // lone continuation byte
  EXPECT_EQ(utf8_invalid_at("\xC0\x80"), 0u);            // overlong NUL
  EXPECT_EQ(utf8_invalid_at("x\xE0\x80\xAF"), 1u);       // overlong 3-byte
  EXPECT_EQ(utf8_invalid_at("xy\xED\xA0\x80"), 2u);      // surrogate U+D800
  EXPECT_EQ(utf8_invalid_at("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(utf8_invalid_at("ok\xE2\x82"), 2u);          // truncated at the end
  EXPECT_EQ(utf8_invalid_at("\xE2\x28\xA1"), 0u);        // bad continuation
}

// ---- reading files ---------------------------------------------------------------------------------------------

TEST(AlpacaRead, RealCleanedFile) {
  SKIP_IF_ABSENT(kAlpaca5000);
  LoadReport rep;
  const std::vector<AlpacaRecord> recs = read_alpaca_file(kAlpaca5000, true, &rep);
  ASSERT_EQ(recs.size(), 5000u);
  EXPECT_EQ(rep.records, 5000);
  EXPECT_EQ(rep.used, 5000);
  EXPECT_TRUE(rep.skipped.empty());
  EXPECT_EQ(std::count_if(recs.begin(), recs.end(), [](const AlpacaRecord& r) { return !r.input.empty(); }), 1990);
  EXPECT_EQ(recs[0].instruction, "Give three tips for staying healthy.");
  EXPECT_EQ(recs[0].input, "");
  EXPECT_EQ(recs[0].output.substr(0, 35), "1. Eat a balanced and nutritious di");
  EXPECT_NE(recs[5].output.find("Commodore 64"), std::string::npos);
}

TEST(AlpacaRead, RealDemoFile) {
  SKIP_IF_ABSENT(kAlpaca999);
  const std::vector<AlpacaRecord> recs = read_alpaca_file(kAlpaca999, true);
  ASSERT_EQ(recs.size(), 999u);
  EXPECT_EQ(std::count_if(recs.begin(), recs.end(), [](const AlpacaRecord& r) { return !r.input.empty(); }), 412);
  EXPECT_EQ(recs[0].instruction, "Describe a process of making crepes.");
}

// Each kind of bad record in a JSON array: counted, skipped, one warning naming the file, record and line.
TEST(AlpacaRead, BadRecordsInArrayAreCountedAndSkipped) {
  test::TempDir dir("dataset");
  const std::string path = dir.file("bad.json");
  write_file(path,
             "[\n"
             "  {\"instruction\": \"a\", \"input\": \"\", \"output\": \"A\"},\n"       // 0 ok       line 2
             "  {\"instruction\": \"b\", \"input\": \"\"},\n"                           // 1 missing  line 3
             "  {\"instruction\": 7, \"output\": \"C\"},\n"                              // 2 type     line 4
             "  {\"instruction\": \"d\", \"output\": \"bad \xFF byte\"},\n"             // 3 utf-8    line 5
             "  {\"instruction\": \"e\", \"output\": \"\"},\n"                          // 4 empty    line 6
             "  {\"instruction\": \"f\", \"input\": [1], \"output\": \"F\"},\n"         // 5 input    line 7
             "  \"just a string\",\n"                                                    // 6 object   line 8
             "  {\"instruction\": \"h\", \"output\": \"\\ud800x\"},\n"                  // 7 surrog.  line 9
             "  {\"instruction\": \"i\", \"output\": \"I\", \"extra\": {\"k\": 1}}\n"   // 8 ok       line 10
             "]\n");
  LoadReport rep;
  testing::internal::CaptureStderr();
  const std::vector<AlpacaRecord> recs = read_alpaca_file(path, false, &rep);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].output, "A");
  EXPECT_EQ(recs[1].output, "I");
  EXPECT_EQ(rep.records, 9);
  EXPECT_EQ(rep.used, 2);
  ASSERT_EQ(rep.skipped.size(), 7u);
  const std::vector<int64_t> idx = {1, 2, 3, 4, 5, 6, 7};
  const std::vector<std::string> why = {"missing 'output'", "'instruction' must be a string, got number",
                                        "invalid UTF-8 in 'output' (byte 0xFF)", "empty 'output'",
                                        "'input' must be a string, got array", "not a JSON object (string)",
                                        "lone UTF-16 surrogate"};
  for (size_t i = 0; i < idx.size(); i++) {
    EXPECT_EQ(rep.skipped[i].index, idx[i]);
    EXPECT_EQ(rep.skipped[i].line, idx[i] + 2);
    EXPECT_NE(rep.skipped[i].reason.find(why[i]), std::string::npos) << rep.skipped[i].reason;
    const std::string line = path + ": record " + std::to_string(idx[i]) + " (line " + std::to_string(idx[i] + 2) +
                             "): skipped: " + rep.skipped[i].reason;
    EXPECT_NE(err.find(line), std::string::npos) << "no warning '" << line << "' in:\n" << err;
  }
  EXPECT_NE(err.find(path + ": skipped 7 of 9 records"), std::string::npos) << err;
}

TEST(AlpacaRead, BadRecordsInJsonlNameTheLine) {
  test::TempDir dir("dataset");
  const std::string path = dir.file("bad.jsonl");
  write_file(path,
             "{\"instruction\": \"a\", \"output\": \"A\"}\n"   // record 0, line 1
             "\n"                                              // blank: not a record
             "{\"instruction\": \"b\", \"output\": \"B\"\r\n"  // record 1, line 3: not JSON
             "{\"instruction\": \"c\", \"output\": null}\n"    // record 2, line 4: missing
             "{\"instruction\": \"d\\u00e9\", \"input\": \"x\", \"output\": \"D\"}\r\n");  // record 3, line 5
  LoadReport rep;
  testing::internal::CaptureStderr();
  const std::vector<AlpacaRecord> recs = read_alpaca_file(path, false, &rep);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].instruction, "d\xC3\xA9");
  EXPECT_EQ(recs[1].input, "x");
  ASSERT_EQ(rep.skipped.size(), 2u);
  EXPECT_EQ(rep.skipped[0].index, 1);
  EXPECT_EQ(rep.skipped[0].line, 3);
  EXPECT_NE(rep.skipped[0].reason.find("not valid JSON"), std::string::npos) << rep.skipped[0].reason;
  EXPECT_EQ(rep.skipped[1].index, 2);
  EXPECT_EQ(rep.skipped[1].line, 4);
  EXPECT_EQ(rep.skipped[1].reason, "missing 'output'");
  EXPECT_NE(err.find(path + ": record 1 (line 3): skipped: not valid JSON"), std::string::npos) << err;
  EXPECT_NE(err.find(path + ": record 2 (line 4): skipped: missing 'output'"), std::string::npos) << err;
}

TEST(AlpacaRead, StrictModeFailsOnTheFirstBadRecord) {
  test::TempDir dir("dataset");
  const std::string path = dir.file("strict.json");
  write_file(path, "[{\"instruction\": \"a\", \"output\": \"A\"},\n {\"instruction\": \"b\", \"output\": \"\"},\n"
                   " {\"output\": \"C\"}]");
  EXPECT_TRUE(test::throws_error([&] { read_alpaca_file(path, true); },
                                 {path, "record 1 (line 2)", "empty 'output'", "strict"}));
  EXPECT_EQ(read_alpaca_file(path, false).size(), 1u);
}

TEST(AlpacaRead, FilesWithoutUsableRecordsAreErrors) {
  test::TempDir dir("dataset");
  auto check = [&](const std::string& name, const std::string& content, const std::string& part) {
    const std::string path = dir.file(name);
    write_file(path, content);
    testing::internal::CaptureStderr();
    EXPECT_TRUE(test::throws_error([&] { read_alpaca_file(path, false); }, {path, part})) << name;
    testing::internal::GetCapturedStderr();
  };
  check("empty.json", "", "empty file");
  check("spaces.json", " \n\t\n", "empty file");
  check("none.json", "[ ]", "no records");
  check("allbad.json", "[1, {\"instruction\": \"x\"}]", "no usable records");
  check("allbad.jsonl", "{\"instruction\": \"x\"}\n[]\n", "no usable records");
  check("text.json", "Once upon a time", "not JSON");
  check("object.json", "{\"instruction\": \"a\",\n \"output\": \"b\"}\n", "not a JSON array");
  check("open.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"c\"", "not closed");
  check("syntax.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\" \"c\", \"output\": \"d\"}]",
        "record 1 (line 2)");
  check("comma.json", "[{\"instruction\": \"a\", \"output\": \"b\"},]", "','");
  check("trailing.json", "[{\"instruction\": \"a\", \"output\": \"b\"}] x", "after the array");
  EXPECT_TRUE(test::throws_error([&] { read_alpaca_file(dir.file("missing.json"), false); },
                                 {dir.file("missing.json"), "no such file"}));
}

TEST(TextRead, ParagraphsAreDocuments) {
  test::TempDir dir("dataset");
  const std::string path = dir.file("t.txt");
  write_file(path, "\xEF\xBB\xBFone\ntwo\n\n\n  \t\nthree\r\n\r\nfour \xE2\x82\xAC\nfive\n\nbad \xC3\n\nlast");
  std::vector<std::string> docs;
  std::vector<int64_t> ids;
  testing::internal::CaptureStderr();
  const LoadReport rep = read_text_corpus(path, "text", false, [&](int64_t i, const std::string& s) {
    ids.push_back(i);
    docs.push_back(s);
  });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(docs, (std::vector<std::string>{"one\ntwo", "three", "four \xE2\x82\xAC\nfive", "last"}));
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 1, 2, 4}));
  ASSERT_EQ(rep.skipped.size(), 1u);
  EXPECT_EQ(rep.skipped[0].index, 3);
  EXPECT_EQ(rep.skipped[0].line, 11);
  EXPECT_NE(err.find(path + ": record 3 (line 11): skipped: invalid UTF-8 (byte 0xC3 at line 11)"), std::string::npos)
      << err;
  EXPECT_TRUE(test::throws_error([&] { read_text_corpus(path, "text", true, [](int64_t, const std::string&) {}); },
                                 {path, "record 3 (line 11)", "invalid UTF-8"}));
}

TEST(TextRead, TinyStoriesParagraphs) {
  std::vector<std::string> docs;
  read_text_corpus(kStories, "text", true, [&](int64_t, const std::string& s) { docs.push_back(s); });
  ASSERT_EQ(docs.size(), 4302u);
  EXPECT_EQ(docs[0], "Spot. Spot saw the shiny car and said, \"Wow, Kitty, your car is so bright and clean!\" Kitty "
                     "smiled and replied, \"Thank you, Spot. I polish it every day.\"");
  EXPECT_EQ(docs[1].substr(0, 40), "After playing with the car, Kitty and Sp");
  EXPECT_EQ(docs.back().substr(docs.back().size() - 20), "special performance.");
}

TEST(TextRead, JsonlTextCorpus) {
  test::TempDir dir("dataset");
  const std::string path = dir.file("c.jsonl");
  write_file(path, "{\"text\": \"first doc\", \"meta\": 1}\n{\"text\": \"\"}\n{\"txt\": \"x\"}\n{\"text\": 5}\n"
                   "{\"text\": \"bad \xFF\"}\n{\"text\": \"second\\ndoc\"}\n");
  std::vector<std::string> docs;
  LoadReport rep;
  testing::internal::CaptureStderr();
  rep = read_text_corpus(path, "jsonl", false, [&](int64_t, const std::string& s) { docs.push_back(s); });
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(docs, (std::vector<std::string>{"first doc", "second\ndoc"}));
  ASSERT_EQ(rep.skipped.size(), 4u);
  EXPECT_EQ(rep.skipped[0].reason, "empty 'text'");
  EXPECT_EQ(rep.skipped[1].reason, "missing 'text'");
  EXPECT_EQ(rep.skipped[2].reason, "'text' must be a string, got number");
  EXPECT_EQ(rep.skipped[3].reason, "invalid UTF-8 in 'text' (byte 0xFF)");
  EXPECT_EQ(rep.skipped[3].line, 5);
}

TEST(DataFormat, ResolvedFromExtensionAndFirstRecord) {
  test::TempDir dir("dataset");
  write_file(dir.file("a.jsonl"), "\n{\"instruction\": \"a\", \"output\": \"b\"}\n");
  write_file(dir.file("t.jsonl"), "{\"text\": \"a\"}\n");
  write_file(dir.file("x.jsonl"), "{\"prompt\": \"a\"}\n");
  EXPECT_EQ(resolve_data_format("d/x.txt", "auto"), "text");
  EXPECT_EQ(resolve_data_format("d/x.JSON", "auto"), "alpaca");
  EXPECT_EQ(resolve_data_format(dir.file("a.jsonl"), "auto"), "alpaca");
  EXPECT_EQ(resolve_data_format(dir.file("t.jsonl"), "auto"), "jsonl");
  EXPECT_EQ(resolve_data_format("d/x.csv", "text"), "text");
  EXPECT_TRUE(test::throws_error([&] { resolve_data_format(dir.file("x.jsonl"), "auto"); },
                                 {dir.file("x.jsonl"), "neither 'instruction'", "format"}));
  EXPECT_TRUE(test::throws_error([] { resolve_data_format("d/x.csv", "auto"); }, {"d/x.csv", ".csv", "format"}));
}

// ---- config ----------------------------------------------------------------------------------------------------

TEST(DataConfigTest, ValidateRejectsOutOfRangeValues) {
  DataConfig ok;
  ok.path = "x.json";
  EXPECT_NO_THROW(ok.validate());
  EXPECT_EQ(ok.chunk_length, 1024);
  EXPECT_FALSE(ok.pack_across_documents);
  auto bad = [&](auto edit, std::vector<std::string> parts) {
    DataConfig c = ok;
    edit(c);
    return test::throws_error([&] { c.validate(); }, parts);
  };
  EXPECT_TRUE(bad([](DataConfig& c) { c.chunk_length = 1; }, {"chunk_length = 1", "[2, "}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.chunk_length = 0; }, {"chunk_length = 0"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.path = ""; }, {"'path' is empty"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.format = "csv"; }, {"format = 'csv'"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.prompt_template = "chatml"; }, {"template = 'chatml'"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.validation_fraction = 1.0; }, {"validation_fraction = 1", "[0, 1)"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.validation_fraction = -0.1; }, {"validation_fraction = -0.1"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.validation_fraction = std::nan(""); }, {"validation_fraction"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.validation_count = -1; }, {"validation_count = -1"}));
  EXPECT_TRUE(bad([](DataConfig& c) { c.validation_count = 5; }, {"both set"}));
}

// ---- packing ---------------------------------------------------------------------------------------------------

// Documents of 5, 3 and 7 tokens (N = 15), T = 4: (15 - 1) / 4 = 3 chunks, the last 3 tokens dropped.
TEST(Packing, DocumentAwareBoundariesAndTargets) {
  TokenStream st;
  st.append(doc(100, 5, 2), 10);  // stream 0..4, labels: -100 -100 102 103 104
  st.append(doc(200, 3), 11);     // stream 5..7
  st.append(doc(300, 7), 12);     // stream 8..14
  const PackedDataset p(st, 4, false);
  EXPECT_EQ(p.num_raw_chunks(), 3);
  ASSERT_EQ(p.num_chunks(), 3);
  const Chunk c0 = p.chunk(0), c1 = p.chunk(1), c2 = p.chunk(2);
  EXPECT_EQ(c0.input_ids, (std::vector<int32_t>{100, 101, 102, 103}));
  EXPECT_EQ(c0.targets, (std::vector<int32_t>{kIgnoreIndex, 102, 103, kIgnoreIndex}));
  EXPECT_EQ(c0.doc_starts, (std::vector<int32_t>{0}));
  EXPECT_FALSE(c0.continues_document);
  // Chunk 1 = stream 4..7: 104 | 200 201 202. The last token of document 0 predicts nothing.
  EXPECT_EQ(c1.input_ids, (std::vector<int32_t>{104, 200, 201, 202}));
  EXPECT_EQ(c1.targets, (std::vector<int32_t>{kIgnoreIndex, 201, 202, kIgnoreIndex}));
  EXPECT_EQ(c1.doc_starts, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(c1.doc_index, (std::vector<int64_t>{0, 1, 1, 1}));
  EXPECT_EQ(c1.segment_ids(), (std::vector<int32_t>{0, 1, 1, 1}));
  EXPECT_TRUE(c1.continues_document);
  // Chunk 2 = stream 8..11, all in document 2, which starts exactly at the cut.
  EXPECT_EQ(c2.input_ids, (std::vector<int32_t>{300, 301, 302, 303}));
  EXPECT_EQ(c2.targets, (std::vector<int32_t>{301, 302, 303, kIgnoreIndex}));
  EXPECT_EQ(c2.doc_starts, (std::vector<int32_t>{0}));
  EXPECT_FALSE(c2.continues_document);
  EXPECT_EQ(p.stream().source(2), 12);
}

TEST(Packing, AcrossDocumentsTargetsCrossBoundaries) {
  TokenStream st;
  st.append(doc(100, 5, 2), 0);
  st.append(doc(200, 3), 1);
  st.append(doc(300, 7, 1), 2);  // its first token is masked, like an Alpaca BOS
  const PackedDataset p(st, 4, true);
  ASSERT_EQ(p.num_chunks(), 3);
  const Chunk c1 = p.chunk(1), c2 = p.chunk(2);
  EXPECT_EQ(c1.targets, (std::vector<int32_t>{200, 201, 202, kIgnoreIndex}));  // 104 -> 200 crosses
  EXPECT_EQ(c1.doc_starts, (std::vector<int32_t>{0}));                         // no boundaries
  EXPECT_EQ(c1.doc_index, (std::vector<int64_t>{0, 1, 1, 1}));                 // still reported
  EXPECT_EQ(c2.targets, (std::vector<int32_t>{301, 302, 303, kIgnoreIndex}));
  // In document-aware mode the same stream loses exactly the crossing target.
  const PackedDataset q(st, 4, false);
  EXPECT_EQ(q.chunk(1).targets, (std::vector<int32_t>{kIgnoreIndex, 201, 202, kIgnoreIndex}));
}

// Like the reference (`while len(buffer) > chunk_size`), a chunk needs a token after it: exactly k*T tokens give k-1.
TEST(Packing, ChunkCountAndTailFollowTheReference) {
  for (int n : {1, 2, 3, 4, 5, 8, 9, 12, 13}) {
    TokenStream st;
    st.append(doc(0, n), 0);
    const PackedDataset p(st, 4, true);
    EXPECT_EQ(p.num_raw_chunks(), (n - 1) / 4) << n;
    EXPECT_EQ(p.num_chunks(), (n - 1) / 4) << n;
  }
  TokenStream st;
  st.append(doc(0, 5), 0);
  EXPECT_TRUE(test::throws_error([&] { PackedDataset(st, 1, false); }, {"chunk_length = 1"}));
  EXPECT_TRUE(test::throws_error([&] { PackedDataset(st, 4, false).chunk(1); }, {"chunk 1 is out of range"}));
}

// A chunk without any target (all-masked prompt tokens, or only a crossing target in document-aware mode) is dropped,
// as the reference drops all -100 chunks.
TEST(Packing, ChunksWithoutTargetsAreDropped) {
  TokenStream st;
  st.append(doc(0, 9, 6), 0);   // stream 0..8, labels supervised at 6, 7, 8
  st.append(doc(50, 1), 1);     // stream 9
  st.append(doc(60, 5, 5), 2);  // stream 10..14, all masked
  // Raw chunks: 0..3 (targets 1..3 all masked), 4..7, 8..11 = {8, 50, 60, 61}.
  const PackedDataset p(st, 4, true);
  EXPECT_EQ(p.num_raw_chunks(), 3);
  ASSERT_EQ(p.num_chunks(), 2);
  EXPECT_EQ(p.chunk(0).index, 1);
  EXPECT_EQ(p.chunk(0).targets, (std::vector<int32_t>{kIgnoreIndex, 6, 7, kIgnoreIndex}));
  EXPECT_EQ(p.chunk(1).index, 2);
  EXPECT_EQ(p.chunk(1).input_ids, (std::vector<int32_t>{8, 50, 60, 61}));
  EXPECT_EQ(p.chunk(1).targets, (std::vector<int32_t>{50, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}));
  // Document-aware: chunk 2's only target crosses into document 1, so the chunk goes.
  const PackedDataset q(st, 4, false);
  ASSERT_EQ(q.num_chunks(), 1);
  EXPECT_EQ(q.chunk(0).index, 1);
  EXPECT_EQ(q.chunk(0).targets, (std::vector<int32_t>{kIgnoreIndex, 6, 7, kIgnoreIndex}));
}

// The whole 999-record file packed at T = 1024 with the real tokenizer: tokens conserved, boundaries recorded where
// documents meet, targets never cross one (document-aware), and for Alpaca both modes have the same targets.
TEST(Packing, RealAlpacaFileBothModes) {
  SKIP_IF_ABSENT(kAlpaca999);
  const Tokenizer& t = tok();
  const std::vector<AlpacaRecord> recs = read_alpaca_file(kAlpaca999, true);
  std::vector<int32_t> all_tokens, all_labels;
  std::vector<int64_t> doc_begin;
  for (const AlpacaRecord& r : recs) {
    const Sample s = tokenize_alpaca(t, r);
    doc_begin.push_back(static_cast<int64_t>(all_tokens.size()));
    all_tokens.insert(all_tokens.end(), s.tokens.begin(), s.tokens.end());
    all_labels.insert(all_labels.end(), s.labels.begin(), s.labels.end());
  }
  const int64_t N = static_cast<int64_t>(all_tokens.size()), T = 1024;
  ASSERT_GT(N, 100 * T);
  DataConfig c = config_for(kAlpaca999);
  const DataLoader aware(c, t);
  c.pack_across_documents = true;
  const DataLoader across(c, t);
  EXPECT_EQ(aware.train().stream().num_tokens(), N);
  EXPECT_EQ(aware.train().num_raw_chunks(), (N - 1) / T);
  ASSERT_EQ(aware.num_chunks(), (N - 1) / T);  // every chunk of real data has an answer token
  ASSERT_EQ(across.num_chunks(), aware.num_chunks());
  std::vector<int32_t> joined;
  int64_t boundaries = 0;
  for (int64_t k = 0; k < aware.num_chunks(); k++) {
    const Chunk a = aware.train().chunk(k), b = across.train().chunk(k);
    ASSERT_EQ(a.index, k);
    joined.insert(joined.end(), a.input_ids.begin(), a.input_ids.end());
    EXPECT_EQ(a.input_ids, b.input_ids);
    EXPECT_EQ(a.targets, b.targets) << "chunk " << k;  // the next document starts with a masked BOS
    EXPECT_EQ(b.doc_starts, (std::vector<int32_t>{0}));
    std::vector<int32_t> starts = {0};
    for (int64_t i = 0; i < T; i++) {
      const int64_t s = k * T + i;
      EXPECT_EQ(a.doc_index[i], std::upper_bound(doc_begin.begin(), doc_begin.end(), s) - doc_begin.begin() - 1);
      if (i > 0 && a.doc_index[i] != a.doc_index[i - 1]) {
        starts.push_back(static_cast<int32_t>(i));
        EXPECT_EQ(a.input_ids[i], t.bos_id());
        EXPECT_EQ(a.input_ids[i - 1], t.eos_id());
        EXPECT_EQ(a.targets[i - 1], kIgnoreIndex);                 // nothing predicted from the EOS
        if (i >= 2) {
          EXPECT_EQ(a.targets[i - 2], t.eos_id());  // the EOS is predicted from the token before it
        }
      }
      const int32_t want = i + 1 < T && a.doc_index[i + 1] == a.doc_index[i] ? all_labels[s + 1] : kIgnoreIndex;
      ASSERT_EQ(a.targets[i], want) << "chunk " << k << " position " << i;
    }
    EXPECT_EQ(a.doc_starts, starts);
    boundaries += static_cast<int64_t>(starts.size()) - 1;
  }
  EXPECT_EQ(joined, std::vector<int32_t>(all_tokens.begin(), all_tokens.begin() + joined.size()));
  // Only the tail is left out: between 1 and T tokens (never padded).
  EXPECT_GE(N - static_cast<int64_t>(joined.size()), 1);
  EXPECT_LE(N - static_cast<int64_t>(joined.size()), T);
  EXPECT_GT(boundaries, 900);  // 999 documents, a few in the dropped tail or at a cut
}

// Text corpus: every token supervised, so pack_across_documents predicts the next BOS from the EOS; document-aware
// does not.
TEST(Packing, TinyStoriesTargetsCrossOnlyWhenPackedAcross) {
  const Tokenizer& t = tok();
  DataConfig c = config_for(kStories);
  c.chunk_length = 256;
  const DataLoader aware(c, t);
  c.pack_across_documents = true;
  const DataLoader across(c, t);
  ASSERT_EQ(aware.train().stream().num_documents(), 4302);
  ASSERT_EQ(aware.num_chunks(), across.num_chunks());
  int64_t crossings = 0;
  for (int64_t k = 0; k < aware.num_chunks(); k++) {
    const Chunk a = aware.train().chunk(k), b = across.train().chunk(k);
    for (size_t i = 0; i + 1 < a.input_ids.size(); i++) {
      if (a.doc_index[i + 1] != a.doc_index[i]) {
        crossings++;
        ASSERT_EQ(a.input_ids[i], t.eos_id());
        ASSERT_EQ(a.targets[i], kIgnoreIndex);
        ASSERT_EQ(b.targets[i], t.bos_id());
      } else {
        ASSERT_EQ(a.targets[i], a.input_ids[i + 1]);
        ASSERT_EQ(b.targets[i], a.input_ids[i + 1]);
      }
    }
    EXPECT_EQ(a.num_targets(), b.num_targets() - (static_cast<int64_t>(a.doc_starts.size()) - 1));
  }
  EXPECT_GT(crossings, 3000);
}

// ---- split and order -------------------------------------------------------------------------------------------

TEST(Split, DisjointStableAndSeeded) {
  SKIP_IF_ABSENT(kAlpaca999);
  const Tokenizer& t = tok();
  DataConfig c = config_for(kAlpaca999);
  c.validation_fraction = 0.1;
  c.seed = 3;
  auto sources = [](const PackedDataset& p) {
    std::vector<int64_t> s;
    for (int64_t d = 0; d < p.stream().num_documents(); d++) s.push_back(p.stream().source(d));
    return s;
  };
  const DataLoader a(c, t);
  const std::vector<int64_t> train = sources(a.train()), val = sources(a.validation());
  ASSERT_EQ(val.size(), 100u);  // round(0.1 * 999)
  ASSERT_EQ(train.size(), 899u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));  // both splits keep file order
  EXPECT_TRUE(std::is_sorted(val.begin(), val.end()));
  std::vector<int64_t> both = train;
  both.insert(both.end(), val.begin(), val.end());
  std::sort(both.begin(), both.end());
  std::vector<int64_t> all(999);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(both, all);  // disjoint and complete
  EXPECT_GT(a.num_validation_chunks(), 5);
  // Stable: the same seed gives the same split whatever the chunk length or packing mode.
  c.chunk_length = 333;
  c.pack_across_documents = true;
  const DataLoader b(c, t);
  EXPECT_EQ(sources(b.validation()), val);
  // Not the first 100 records, and another seed holds out other records.
  EXPECT_NE(val.back(), 99);
  c.seed = 4;
  const DataLoader d(c, t);
  EXPECT_NE(sources(d.validation()), val);
  EXPECT_EQ(sources(d.validation()).size(), 100u);
  // A count instead of a fraction.
  c.validation_fraction = 0.0;
  c.validation_count = 200;
  EXPECT_EQ(DataLoader(c, t).validation().stream().num_documents(), 200);
}

TEST(Split, SizesAndErrors) {
  EXPECT_EQ(validation_size(999, 0.1, 0), 100);
  EXPECT_EQ(validation_size(999, 0.0, 0), 0);
  EXPECT_EQ(validation_size(10, 0.001, 0), 1);  // at least one when asked for
  EXPECT_EQ(validation_size(10, 0.0, 3), 3);
  const SplitIndices s = split_records(10, 3, 0);
  EXPECT_EQ(s.validation.size(), 3u);
  EXPECT_EQ(s.train.size(), 7u);
  EXPECT_EQ(split_records(10, 3, 0).validation, s.validation);
  // One record cannot be split; a split too short for one chunk is an Error naming the file.
  TokenStream one;
  one.append(doc(1, 50), 0);
  DataConfig c;
  c.path = "mem";
  c.validation_fraction = 0.5;
  EXPECT_TRUE(test::throws_error([&] { DataLoader(c, one); }, {"mem", "none for training"}));
  c.validation_fraction = 0.0;
  c.chunk_length = 50;
  EXPECT_TRUE(test::throws_error([&] { DataLoader(c, one); }, {"mem", "does not fill one chunk"}));
  c.chunk_length = 49;
  EXPECT_EQ(DataLoader(c, one).num_chunks(), 1);
}

TEST(Order, PermutationIsSeededAndPerEpoch) {
  const std::vector<int64_t> p = epoch_permutation(1000, 0, 0);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(p, iota);
  EXPECT_EQ(epoch_permutation(1000, 0, 0), p);
  EXPECT_NE(epoch_permutation(1000, 0, 1), p);
  EXPECT_NE(epoch_permutation(1000, 1, 0), p);
  EXPECT_EQ(epoch_permutation(1, 5, 3), (std::vector<int64_t>{0}));
  EXPECT_TRUE(epoch_permutation(0, 5, 3).empty());
}

// chunk(e, i) is a pure function of (data, config, e, i): the same from a loader that reads everything in order as
// from one that reads a strided subset (a rank of several), in any epoch order.
TEST(Order, GlobalIndexIndependentOfReader) {
  SKIP_IF_ABSENT(kAlpaca999);
  const Tokenizer& t = tok();
  DataConfig c = config_for(kAlpaca999);
  c.seed = 0;
  const DataLoader full(c, t), rank(c, t);
  const int64_t n = full.num_chunks();
  ASSERT_GT(n, 50);
  std::vector<std::vector<int64_t>> ids(2);
  for (int64_t e = 0; e < 2; e++) {
    for (int64_t i = 0; i < n; i++) ids[e].push_back(full.chunk_id(e, i));
  }
  for (int64_t e = 1; e >= 0; e--) {  // epochs in reverse, every third chunk from offset 1
    for (int64_t i = 1; i < n; i += 3) {
      ASSERT_EQ(rank.chunk_id(e, i), ids[e][i]);
      const Chunk a = rank.chunk(e, i), b = full.chunk(e, i);
      ASSERT_EQ(a.index, b.index);
      ASSERT_EQ(a.input_ids, b.input_ids);
      ASSERT_EQ(a.targets, b.targets);
    }
  }
  EXPECT_EQ(ids[0], epoch_permutation(n, 0, 0));
  EXPECT_NE(ids[0], ids[1]);
  // Same seed, new loader: same order; another seed: another order over the same chunks.
  c.seed = 1;
  const DataLoader other(c, t);
  ASSERT_EQ(other.num_chunks(), n);
  std::vector<int64_t> o;
  for (int64_t i = 0; i < n; i++) o.push_back(other.chunk_id(0, i));
  EXPECT_NE(o, ids[0]);
  std::sort(o.begin(), o.end());
  std::vector<int64_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(o, iota);
  EXPECT_TRUE(test::throws_error([&] { full.chunk(0, n); }, {"out of range"}));
  EXPECT_TRUE(test::throws_error([&] { full.chunk(-1, 0); }, {"negative"}));
}

// The 5,000-record file end to end with the defaults (T = 1024, 1% validation, document-aware).
TEST(Loader, RealCleanedFileDefaults) {
  SKIP_IF_ABSENT(kAlpaca5000);
  const Tokenizer& t = tok();
  DataConfig c;
  c.path = kAlpaca5000;
  const DataLoader dl(c, t);
  EXPECT_EQ(dl.report().used, 5000);
  EXPECT_EQ(dl.report().format, "alpaca");
  EXPECT_EQ(dl.validation().stream().num_documents(), 50);
  EXPECT_EQ(dl.train().stream().num_documents(), 4950);
  const TokenStream& st = dl.train().stream();
  const int64_t n_tok = st.num_tokens();
  EXPECT_EQ(dl.train().num_raw_chunks(), (n_tok - 1) / 1024);
  // Some raw chunks lie wholly inside long prompts (the 512-piece tokenizer makes them long) and have no target:
  // count the chunks with one directly from the stream.
  int64_t with_target = 0;
  for (int64_t k = 0; k < (n_tok - 1) / 1024; k++) {
    bool any = false;
    for (int64_t s = k * 1024; s < (k + 1) * 1024 - 1 && !any; s++) {
      any = st.supervised(s + 1) && st.document_of(s + 1) == st.document_of(s);
    }
    with_target += any;
  }
  EXPECT_LT(with_target, (n_tok - 1) / 1024);
  EXPECT_EQ(dl.num_chunks(), with_target);
  const Chunk ch = dl.chunk(0, 0);
  EXPECT_EQ(ch.input_ids.size(), 1024u);
  EXPECT_GT(ch.num_targets(), 0);
  EXPECT_EQ(ch.targets.back(), kIgnoreIndex);
}

TEST(Loader, BadFileErrorsNameTheFile) {
  test::TempDir dir("dataset");
  DataConfig c = config_for(dir.file("none.json"));
  EXPECT_TRUE(test::throws_error([&] { DataLoader(c, tok()); }, {dir.file("none.json"), "no such file"}));
  write_file(dir.file("empty.jsonl"), "\n\n");
  c.path = dir.file("empty.jsonl");
  c.format = "alpaca";
  EXPECT_TRUE(test::throws_error([&] { DataLoader(c, tok()); }, {dir.file("empty.jsonl"), "no records"}));
  c.chunk_length = 1;
  EXPECT_TRUE(test::throws_error([&] { DataLoader(c, tok()); }, {"chunk_length = 1"}));
}

}  // namespace
}  // namespace liger
