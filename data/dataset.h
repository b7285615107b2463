// data/dataset.h — training data: Alpaca instruction records and plain-text corpora, the paper's prompt templates,
// loss masking, packing into fixed-length chunks, a seeded validation split and a deterministic epoch order.
//
// The pipeline (DataLoader runs all of it; each step is also callable on its own):
//
//   file --read_alpaca / read_text_corpus--> records (bad ones counted, warned about and skipped)
//        --tokenize_alpaca / tokenize_text--> Sample {tokens, labels}          (one document per record)
//        --split_records (seeded)-----------> train / validation documents, each kept in file order
//        --PackedDataset--------------------> one token stream per split, cut every T tokens into Chunks
//        --epoch_permutation (seed, epoch)--> DataLoader::chunk(epoch, index)
//
// What the reference does (liger-spec.md §4.2, §7.16; Liger's training/dataloader.py is LoLCATs'
// src/dataloaders/alpaca_clean.py and utils/packing.py) and what liger does:
//
// * Templates: the two standard Alpaca prompts, byte for byte (alpaca_prompt below). The no-input template is used
//   exactly when `input` is the empty string (or absent/null): `sample.get('input', '') == ''` in the reference, so an
//   input of " " still takes the with-input template.
// * Tokenization: the prompt and the answer are tokenized SEPARATELY, not as one string:
//       tokens = encode(prompt, add_bos = true) ++ encode(output, add_bos = false) ++ [eos_id]
//       labels = [-100] * len(encode(prompt, true))  ++ encode(output, false) ++ [eos_id]
//   The reference calls tokenizer.encode(prompt, add_special_tokens=True) and
//   tokenizer.encode(output + eos_token, add_special_tokens=False); HF splits the eos_token text out as its id, which
//   is what appending eos_id() does. The subtlety with SentencePiece (Llama-2, stories260K): encoding the output on
//   its own adds the dummy-prefix space, so the first answer token is "▁Word", whereas tokenizing prompt + output as
//   one string would give "\n" followed by "Word" without the ▁, and the prompt/answer boundary would not even fall on
//   a token boundary in general. Separate tokenization is what the model was fine-tuned on in the paper, so liger
//   does the same; the sample is therefore NOT equal to encode(prompt + output). For byte-level BPE (Llama-3, Qwen)
//   there is no dummy prefix and the two ways agree whenever the pre-tokenizer splits at the "\n" before the answer.
// * Labels use -100 (kIgnoreIndex, as HF) for positions without loss. A label is either the token itself or -100.
//   Alpaca: BOS and every prompt token are -100; the answer tokens and the EOS are supervised. Text corpora: every
//   token is supervised (BOS included: it is a label only in pack_across_documents mode, after the previous EOS).
// * Packing: the documents of a split are concatenated in file order into one stream of N tokens and cut every T
//   tokens. Like the reference (`while len(buffer) > chunk_size`), a chunk is emitted only when at least one token of
//   the stream follows it, so there are (N - 1) / T raw chunks (a stream of exactly k*T tokens gives k - 1) and the
//   tail is dropped, never padded. Chunks with no supervised target are dropped (the reference drops chunks whose
//   labels are all -100; liger tests the shifted targets instead, which also drops the rare chunk whose only label is
//   at position 0 and would give the reference a NaN loss). The chunk ORDER is what gets shuffled, per epoch, as the
//   reference's DataLoader(shuffle=True) does; the chunk contents are fixed for the run.
// * Targets: target[t] is the label of the token at t + 1 in the same chunk (the reference's logits[:, :-1] vs
//   labels[:, 1:]), and target[T - 1] = -100 (nothing is predicted across a chunk cut). Then:
//     - document-aware (default): additionally target[t] = -100 when token t + 1 belongs to the next document. The
//       EOS that ends a document is itself predicted (from the token before it); nothing is predicted FROM the EOS.
//       chunk.doc_starts lists where documents begin inside the chunk: the model restarts its recurrent state there
//       and the sliding window does not reach back across it. For Alpaca this changes no target at all (the next
//       document's first token is a masked BOS/prompt token); it changes only the attention/state context.
//     - pack_across_documents = true: the paper's packing, one continuous stream with no boundaries
//       (doc_starts = {0}, spec §7.7: no document masking); targets cross documents where labels allow (for text
//       corpora, EOS -> next BOS is a supervised target, as with the reference's labels = input_ids).
// * Plain text (.txt): documents are the paragraphs of the file, separated by one or more blank (empty or
//   whitespace-only) lines. TinyStories (tinystories_valid_head.txt) separates stories by "\n\n" but stories also
//   contain blank lines, so story boundaries cannot be recovered; a paragraph never spans two stories, so no
//   document leaks context into another, at the price of extra BOS/EOS inside stories. Use a JSONL {"text": ...}
//   corpus when exact document boundaries matter. Each document: BOS + encode(text) + EOS, all supervised.
//   A file without blank lines is one document.
// * Validation split: a seeded shuffle of the usable record indices; the first n_val of it are held out. Both splits
//   keep file order for packing. The split depends only on (number of usable records, n_val, seed). (The reference
//   holds out rows 0..199 of alpaca-cleaned; validation_count = 200 gives the same size, chosen at random instead.)
// * Global indexing: DataLoader::chunk(epoch, i) is the i-th chunk of that epoch's seeded permutation of the training
//   chunks, a pure function of (data, config, epoch, i): the same whichever process asks and whatever else it read.
//   A later issue shards by rank (rank r of W reads i = r, r + W, ...).
//
// Memory: records are parsed and tokenized one at a time (a JSON array file is held once as bytes, a JSONL file is
// read line by line); a split stores 5 bytes per token (int32 id + 1-byte supervised flag) and 16 bytes per document.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace liger {

class Tokenizer;

// Label of a position without loss (HF's ignore_index).
constexpr int32_t kIgnoreIndex = -100;

// ---- configuration ---------------------------------------------------------------------------------------------

struct DataConfig {
  std::string path;                        // dataset file: .json (Alpaca JSON array), .jsonl (Alpaca or {"text"} per
                                           // line) or .txt (plain text); required
  std::string format = "auto";             // auto | alpaca | text | jsonl. alpaca: {instruction, input, output}
                                           // records, as a JSON array or JSONL (told apart by the first byte);
                                           // text: plain text, paragraphs are documents; jsonl: one {"text": ...}
                                           // document per line. auto: .txt -> text, .json -> alpaca, .jsonl ->
                                           // alpaca when its first record has "instruction", else jsonl
  std::string prompt_template = "alpaca";  // config key "template": alpaca = the paper's two Alpaca templates (with
                                           // and without input); used for Alpaca records only
  int64_t chunk_length = 1024;             // T: tokens per packed chunk (>= 2; the paper: 1024)
  bool pack_across_documents = false;      // true: the paper's packing, one continuous stream, no document
                                           // boundaries; false: documents restart the state inside a chunk
  double validation_fraction = 0.01;       // fraction of the usable records held out for validation, in [0, 1);
                                           // rounded to nearest, at least 1 when > 0
  int64_t validation_count = 0;            // > 0: hold out exactly this many records instead (the reference holds
                                           // out 200); then validation_fraction must be 0
  uint64_t seed = 0;                       // seeds the validation split and every epoch's chunk order (paper: 0)
  bool strict = false;                     // true: the first bad record is an Error; false: bad records are
                                           // counted, warned about (file, record, line, reason) and skipped

  // Rejects out-of-range values with an Error naming the key and the allowed range.
  void validate() const;
};

// ---- records ---------------------------------------------------------------------------------------------------

struct AlpacaRecord {
  std::string instruction;
  std::string input;   // "" when absent, null or empty: the no-input template
  std::string output;  // never empty
};

// A record that was skipped. index: 0-based position among the file's records (bad ones included; for .txt, the
// paragraph); line: 1-based line where it starts.
struct SkippedRecord {
  int64_t index = 0;
  int64_t line = 0;
  std::string reason;
};

struct LoadReport {
  std::string path;
  std::string format;                  // the resolved format: alpaca | text | jsonl
  int64_t records = 0;                 // records seen (used + skipped)
  int64_t used = 0;                    // records handed on
  std::vector<SkippedRecord> skipped;  // in file order
};

// Reads Alpaca records, calling fn(index, record) for every usable record in file order. A .jsonl file is JSONL
// (one object per line, blank lines ignored); any other file is a JSON array when its first non-space byte is '[',
// JSONL when it is '{' and the file is not one single JSON object (that is an Error: not an array). Bad records
// (not an object, missing or non-string instruction/output, non-string input, empty output, invalid UTF-8 or a lone
// UTF-16 surrogate escape in the record, and for JSONL a line that is not JSON) are skipped with one LOG_WARN line
// each "<path>: record <i> (line <l>): skipped: <reason>", then one summary line; with strict the first one is an
// Error with the same text. A missing or empty file, a file that is not a JSON array (nor JSONL), broken JSON syntax
// in an array, or no usable record is an Error naming the file. Other keys of a record are ignored.
LoadReport read_alpaca(const std::string& path, bool strict,
                       const std::function<void(int64_t index, const AlpacaRecord& record)>& fn);
// The same, collected (for small files and tests).
std::vector<AlpacaRecord> read_alpaca_file(const std::string& path, bool strict, LoadReport* report = nullptr);

// Reads the documents of a plain-text corpus: format "text" (paragraphs separated by blank lines, see the top of
// this file) or "jsonl" (one {"text": "..."} object per line; other keys ignored). fn(index, text) for each usable
// document. Bad documents (invalid UTF-8; for jsonl also: not JSON, not an object, missing/non-string/empty "text")
// are handled as in read_alpaca.
LoadReport read_text_corpus(const std::string& path, const std::string& format, bool strict,
                            const std::function<void(int64_t index, const std::string& text)>& fn);

// The format `config.format` means for `path`: "alpaca", "text" or "jsonl" (auto looks at the extension and, for
// .jsonl, at the first record). An unknown extension under auto is an Error saying which format to give.
std::string resolve_data_format(const std::string& path, const std::string& format);

// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms, surrogates U+D800..DFFF,
// code points above U+10FFFF and truncated sequences are invalid), or std::string::npos when `s` is valid.
size_t utf8_invalid_at(std::string_view s);

// ---- templates and tokenization --------------------------------------------------------------------------------

// The paper's prompt (reference PROMPT_DICT), ending in "### Response:\n":
//   input empty: "Below is an instruction that describes a task. Write a response that appropriately completes the
//                 request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
//   otherwise:   "Below is an instruction that describes a task, paired with an input that provides further
//                 context. Write a response that appropriately completes the request.\n\n### Instruction:\n
//                 {instruction}\n\n### Input:\n{input}\n\n### Response:\n"
// (the line breaks inside the sentences above are only this comment's; the strings have one space there).
std::string alpaca_prompt(const AlpacaRecord& record);

// One document. tokens and labels have the same length; labels[t] is tokens[t] (supervised) or kIgnoreIndex.
struct Sample {
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
};

// encode(prompt, bos) ++ encode(output) ++ [EOS]; labels -100 on the prompt part (see the top of this file).
// A tokenizer without an EOS is an Error.
Sample tokenize_alpaca(const Tokenizer& tok, const AlpacaRecord& record);
// encode(text, bos) ++ [EOS], every token supervised. A tokenizer without an EOS is an Error.
Sample tokenize_text(const Tokenizer& tok, const std::string& text);

// ---- token streams and packing ---------------------------------------------------------------------------------

// Documents concatenated in order: the packed form of one split.
class TokenStream {
 public:
  // Appends one document; `source` is its record index in the file (kept for reports and tests). Labels must be
  // the token or kIgnoreIndex; an empty sample is an Error.
  void append(const Sample& sample, int64_t source);
  // Appends document d of `other`.
  void append_document(const TokenStream& other, int64_t d);

  int64_t num_tokens() const { return static_cast<int64_t>(tokens_.size()); }     // N
  int64_t num_documents() const { return static_cast<int64_t>(source_.size()); }
  int32_t token(int64_t s) const { return tokens_[s]; }
  bool supervised(int64_t s) const { return supervised_[s] != 0; }
  int32_t label(int64_t s) const { return supervised_[s] ? tokens_[s] : kIgnoreIndex; }
  int64_t document_begin(int64_t d) const { return begin_[d]; }      // first token of document d
  int64_t document_end(int64_t d) const { return begin_[d + 1]; }    // one past its last token
  int64_t source(int64_t d) const { return source_[d]; }             // record index in the file
  int64_t document_of(int64_t s) const;                              // document holding token s (binary search)
  int64_t num_supervised() const;

 private:
  std::vector<int32_t> tokens_;      // (N)
  std::vector<uint8_t> supervised_;  // (N) 1 where the label is the token
  std::vector<int64_t> begin_{0};    // (documents + 1) offsets into tokens_
  std::vector<int64_t> source_;      // (documents)
};

// One packed training sequence of T tokens.
struct Chunk {
  int64_t index = 0;                // raw chunk number k in its stream: tokens [k*T, (k+1)*T) of the stream
  std::vector<int32_t> input_ids;   // (T)
  std::vector<int32_t> targets;     // (T) the label position t is trained to predict; kIgnoreIndex = no loss
  std::vector<int64_t> doc_index;   // (T) document (in the split's TokenStream) of each token; informational in
                                    // pack_across_documents mode
  std::vector<int32_t> doc_starts;  // positions where the model restarts its recurrent state and the window may not
                                    // reach back: always starts with 0; document-aware mode adds every position
                                    // inside the chunk where a document begins; pack_across_documents: just {0}
  bool continues_document = false;  // position 0 is the middle of a document cut at the previous chunk

  int64_t num_targets() const;            // positions with a target
  std::vector<int32_t> segment_ids() const;  // (T) 0 up to doc_starts[1], then 1, ...
};

class PackedDataset {
 public:
  PackedDataset() = default;
  // chunk_length >= 2 (else an Error).
  PackedDataset(TokenStream stream, int64_t chunk_length, bool pack_across_documents);

  int64_t chunk_length() const { return chunk_length_; }
  bool pack_across_documents() const { return pack_across_; }
  // Chunks kept (those with at least one target), and the raw count (N - 1) / T before dropping.
  int64_t num_chunks() const { return static_cast<int64_t>(kept_.size()); }
  int64_t num_raw_chunks() const;
  // The k-th kept chunk, in stream order (0 <= k < num_chunks(), else an Error).
  Chunk chunk(int64_t k) const;
  const TokenStream& stream() const { return stream_; }

 private:
  TokenStream stream_;
  int64_t chunk_length_ = 0;
  bool pack_across_ = false;
  std::vector<int64_t> kept_;  // raw chunk numbers of the kept chunks
};

// ---- split and order -------------------------------------------------------------------------------------------

// Records held out for validation: n_val of n (see DataConfig), in [0, n].
int64_t validation_size(int64_t n, double fraction, int64_t count);

struct SplitIndices {
  std::vector<int64_t> train;       // ascending
  std::vector<int64_t> validation;  // ascending
};
// Indices 0..n-1 split by a seeded shuffle: the first n_val of the permutation are validation.
SplitIndices split_records(int64_t n, int64_t n_val, uint64_t seed);

// A seeded uniform permutation of 0..n-1 (Fisher-Yates on liger::Rng), different for every epoch.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// ---- the loader ------------------------------------------------------------------------------------------------

class DataLoader {
 public:
  // Reads config.path (validate()d first), tokenizes, splits and packs. Errors name the file.
  DataLoader(const DataConfig& config, const Tokenizer& tok);
  // From documents already tokenized (document d of `all` is record d); config.path only names them in messages.
  DataLoader(const DataConfig& config, TokenStream all);
  ~DataLoader();
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;

  const DataConfig& config() const { return config_; }
  const LoadReport& report() const { return report_; }

  // Training chunks per epoch, and the index-th of epoch `epoch` (0 <= index < num_chunks(), epoch >= 0).
  int64_t num_chunks() const { return train_.num_chunks(); }
  Chunk chunk(int64_t epoch, int64_t index) const;
  // Which training chunk (PackedDataset::chunk number) chunk(epoch, index) is.
  int64_t chunk_id(int64_t epoch, int64_t index) const;

  // Validation chunks, in stream order (not shuffled).
  int64_t num_validation_chunks() const { return validation_.num_chunks(); }
  Chunk validation_chunk(int64_t index) const { return validation_.chunk(index); }

  const PackedDataset& train() const { return train_; }
  const PackedDataset& validation() const { return validation_; }

 private:
  void build(TokenStream all);

  DataConfig config_;
  LoadReport report_;
  PackedDataset train_;
  PackedDataset validation_;
  struct OrderCache;  // the last epoch's permutation, behind a mutex: chunk() may be called from several threads
  std::unique_ptr<OrderCache> cache_;
};

}  // namespace liger
