// data/tokenizer.h — text <-> token ids for the three tokenizer formats liger reads.
//
//   kind            file                                    used by
//   "sentencepiece" tokenizer.model (SentencePiece protobuf) Llama-2, TinyLlama, stories260K (tok512.model)
//   "tiktoken"      tokenizer.model (text: "base64 rank")    Llama-3 original (Meta) checkpoints
//   "hf-bpe"        tokenizer.json (Hugging Face, byte BPE)  SmolLM2, Llama-3 HF, Qwen2, GPT-2 style models
//
// load_tokenizer(model_dir) picks the format from the directory; see there. Text is UTF-8 in std::string; ids are
// int32. Decoding returns raw bytes: a token that ends in the middle of a UTF-8 character is returned as those
// bytes (the next token completes it), never replaced by U+FFFD.
//
// Tokenizers are immutable after loading; encode/decode may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Tokens of `text`; with add_bos, bos_id() is put first when the model has a BOS (bos_id() >= 0).
  // Special tokens written in the text ("<|eot_id|>", "<|im_start|>") are encoded as their ids for the tiktoken
  // and hf-bpe kinds; SentencePiece treats them as plain text, like the sentencepiece library.
  virtual std::vector<int32_t> encode(const std::string& text, bool add_bos) const = 0;
  // The text of `ids`. Control tokens of SentencePiece (BOS, EOS) decode to nothing; special tokens of the other
  // kinds decode to their text. An id outside [0, vocab_size()) is an Error.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Streaming decode: the bytes that token `id` adds after token `prev_id` (prev_id < 0 at the start), so that
  // printing decode_piece(ids[i-1], ids[i]) for i = 0, 1, ... prints decode(ids). SentencePiece drops the leading
  // space of the first word after BOS (or at the start), as decode() does.
  virtual std::string decode_piece(int32_t prev_id, int32_t id) const = 0;
  // The id of a token given by its text ("<|eot_id|>", "<s>"), or -1 when the vocabulary has no such token.
  virtual int32_t token_to_id(const std::string& token) const = 0;
  // Number of ids, special tokens included (the model's embedding table may be larger, padded).
  virtual int64_t vocab_size() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "hf-bpe" or "tiktoken"

  // BOS / EOS ids, -1 when there is none. A model may stop on several ids (Llama-3 instruct: <|end_of_text|> and
  // <|eot_id|>): eos_id() is the first of eos_ids(), and is_eos(id) is true for all of them.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_ids_.empty() ? -1 : eos_ids_[0]; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  bool is_eos(int32_t id) const;

  // Sets BOS (-1: none) and the EOS list; load_tokenizer does, from the model directory's JSON files. Every id
  // must be in [0, vocab_size()).
  void set_special_ids(int32_t bos_id, std::vector<int32_t> eos_ids);

 protected:
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

// Loads the tokenizer of a model directory:
//   1. tokenizer.json (Hugging Face) when present, else
//   2. tokenizer.model: a SentencePiece model or a Llama-3 tiktoken file, told apart by content.
// BOS/EOS then come from the directory's config.json (bos_token_id, eos_token_id: an id or a list),
// generation_config.json (eos_token_id) and tokenizer_config.json (bos_token, eos_token, add_bos_token), whichever
// exist; an HF tokenizer whose tokenizer.json does not add a BOS (post_processor without one, e.g. SmolLM2, Qwen2)
// gets bos_id() = -1 unless tokenizer_config.json says add_bos_token: true. Defaults when no file says:
// SentencePiece: the model's own <s> / </s>; tiktoken: 128000 / {128001, 128009} as in Meta's tokenizer.py.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);
// Loads one file: "*.json" is a Hugging Face tokenizer.json, anything else a tokenizer.model (SentencePiece or
// tiktoken, by content). Special ids are the format's defaults (no config.json is read).
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path);

// The loaders behind the two calls above; each throws an Error naming `path` for a file of another kind.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_tiktoken_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_hf_bpe_tokenizer(const std::string& path);

}  // namespace liger
