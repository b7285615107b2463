// DataConfig, the Alpaca templates and tokenization, the seeded split and epoch order, and DataLoader
// (rules at the top of data/dataset.h).
#include "data/dataset.h"

#include <cmath>
#include <mutex>
#include <numeric>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/tokenizer.h"

namespace liger {

// ---- DataConfig ------------------------------------------------------------------------------------------------

void DataConfig::validate() const {
  LIGER_CHECK(!path.empty(), "data: 'path' is empty (give the dataset file: .json or .jsonl Alpaca records, .txt or "
              ".jsonl {\"text\"} corpus)");
  LIGER_CHECK(format == "auto" || format == "alpaca" || format == "text" || format == "jsonl",
              "data: format = '%s' is not one of auto, alpaca, text, jsonl", format.c_str());
  LIGER_CHECK(prompt_template == "alpaca", "data: template = '%s' is not a known template (known: alpaca)",
              prompt_template.c_str());
  LIGER_CHECK(chunk_length >= 2 && chunk_length <= (int64_t{1} << 24),
              "data: chunk_length = %lld is out of range (must be in [2, 16777216]: a chunk needs an input and a target; "
              "the paper uses 1024)",
              static_cast<long long>(chunk_length));
  LIGER_CHECK(std::isfinite(validation_fraction) && validation_fraction >= 0.0 && validation_fraction < 1.0,
              "data: validation_fraction = %g is out of range (must be in [0, 1))", validation_fraction);
  LIGER_CHECK(validation_count >= 0, "data: validation_count = %lld is negative (0: use validation_fraction)",
              static_cast<long long>(validation_count));
  LIGER_CHECK(validation_count == 0 || validation_fraction == 0.0,
              "data: validation_count = %lld and validation_fraction = %g are both set (give one; set the other to 0)",
              static_cast<long long>(validation_count), validation_fraction);
}

// ---- templates and tokenization --------------------------------------------------------------------------------

std::string alpaca_prompt(const AlpacaRecord& r) {
  if (r.input.empty()) {
    return "Below is an instruction that describes a task. "
           "Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n" + r.instruction + "\n\n### Response:\n";
  }
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n"
         "### Instruction:\n" + r.instruction + "\n\n### Input:\n" + r.input + "\n\n### Response:\n";
}

namespace {
int32_t require_eos(const Tokenizer& tok) {
  LIGER_CHECK(tok.eos_id() >= 0, "the tokenizer has no EOS token; training samples end with one (give the model's "
              "eos_token_id in config.json)");
  return tok.eos_id();
}
}  // namespace

Sample tokenize_alpaca(const Tokenizer& tok, const AlpacaRecord& record) {
  const int32_t eos = require_eos(tok);
  Sample s;
  s.tokens = tok.encode(alpaca_prompt(record), /*add_bos=*/true);
  s.labels.assign(s.tokens.size(), kIgnoreIndex);
  const std::vector<int32_t> answer = tok.encode(record.output, /*add_bos=*/false);
  s.tokens.insert(s.tokens.end(), answer.begin(), answer.end());
  s.tokens.push_back(eos);
  s.labels.insert(s.labels.end(), answer.begin(), answer.end());
  s.labels.push_back(eos);
  return s;
}

Sample tokenize_text(const Tokenizer& tok, const std::string& text) {
  const int32_t eos = require_eos(tok);
  Sample s;
  s.tokens = tok.encode(text, /*add_bos=*/true);
  s.tokens.push_back(eos);
  s.labels = s.tokens;
  return s;
}

// ---- split and order -------------------------------------------------------------------------------------------

namespace {

constexpr uint64_t kSplitTag = 0x73706c6974ull;  // "split"
constexpr uint64_t kOrderTag = 0x6f72646572ull;  // "order"

// Uniform in [0, range) without modulo bias (Lemire's multiply-and-reject).
uint64_t bounded(Rng& rng, uint64_t range) {
  unsigned __int128 m = static_cast<unsigned __int128>(rng.next_u64()) * range;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < range) {
    const uint64_t threshold = (0 - range) % range;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng.next_u64()) * range;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

std::vector<int64_t> permutation(int64_t n, uint64_t stream_seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  Rng rng(stream_seed);
  for (int64_t i = n - 1; i > 0; i--) {
    const auto j = static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace

int64_t validation_size(int64_t n, double fraction, int64_t count) {
  if (n <= 0) return 0;
  if (count > 0) return std::min(count, n);
  if (!(fraction > 0.0)) return 0;
  const auto v = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  return std::min(std::max<int64_t>(v, 1), n);
}

SplitIndices split_records(int64_t n, int64_t n_val, uint64_t seed) {
  LIGER_CHECK(n >= 0 && n_val >= 0 && n_val <= n, "split_records: %lld of %lld records held out",
              static_cast<long long>(n_val), static_cast<long long>(n));
  const std::vector<int64_t> p = permutation(n, splitmix64(seed ^ kSplitTag));
  SplitIndices s;
  s.validation.assign(p.begin(), p.begin() + n_val);
  s.train.assign(p.begin() + n_val, p.end());
  std::sort(s.validation.begin(), s.validation.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  LIGER_CHECK(epoch >= 0, "epoch %lld is negative", static_cast<long long>(epoch));
  return permutation(n, splitmix64(splitmix64(seed ^ kOrderTag) + static_cast<uint64_t>(epoch)));
}

// ---- DataLoader ------------------------------------------------------------------------------------------------

struct DataLoader::OrderCache {
  std::mutex mu;
  int64_t epoch = -1;
  std::vector<int64_t> order;
};

DataLoader::DataLoader(const DataConfig& config, const Tokenizer& tok)
    : config_(config), cache_(std::make_unique<OrderCache>()) {
  config_.validate();
  require_eos(tok);
  const std::string format = resolve_data_format(config_.path, config_.format);
  TokenStream all;
  if (format == "alpaca") {
    report_ = read_alpaca(config_.path, config_.strict,
                          [&](int64_t index, const AlpacaRecord& r) { all.append(tokenize_alpaca(tok, r), index); });
  } else {
    report_ = read_text_corpus(config_.path, format, config_.strict,
                               [&](int64_t index, const std::string& text) { all.append(tokenize_text(tok, text), index); });
  }
  build(std::move(all));
}

DataLoader::DataLoader(const DataConfig& config, TokenStream all)
    : config_(config), cache_(std::make_unique<OrderCache>()) {
  config_.validate();
  report_.path = config_.path;
  report_.format = "tokens";
  report_.records = report_.used = all.num_documents();
  LIGER_CHECK(all.num_documents() > 0, "%s: no documents", config_.path.c_str());
  build(std::move(all));
}

DataLoader::~DataLoader() = default;
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;

void DataLoader::build(TokenStream all) {
  const char* path = config_.path.c_str();
  const int64_t n = all.num_documents();
  const int64_t n_val = validation_size(n, config_.validation_fraction, config_.validation_count);
  LIGER_CHECK(n - n_val >= 1,
              "%s: %lld usable records leave none for training after holding out %lld for validation (lower "
              "validation_fraction or validation_count)",
              path, static_cast<long long>(n), static_cast<long long>(n_val));
  const SplitIndices split = split_records(n, n_val, config_.seed);
  TokenStream train, validation;
  for (int64_t d : split.train) train.append_document(all, d);
  for (int64_t d : split.validation) validation.append_document(all, d);
  all = TokenStream();
  const int64_t T = config_.chunk_length;
  train_ = PackedDataset(std::move(train), T, config_.pack_across_documents);
  validation_ = PackedDataset(std::move(validation), T, config_.pack_across_documents);
  LIGER_CHECK(train_.num_chunks() > 0,
              "%s: the training split (%lld records, %lld tokens) does not fill one chunk of %lld tokens with a "
              "target (a chunk needs chunk_length + 1 tokens of stream; lower chunk_length or give more data)",
              path, static_cast<long long>(n - n_val), static_cast<long long>(train_.stream().num_tokens()),
              static_cast<long long>(T));
  if (n_val > 0 && validation_.num_chunks() == 0) {
    LOG_WARN("%s: the validation split (%lld records, %lld tokens) does not fill one chunk of %lld tokens: there is "
             "nothing to evaluate on (raise validation_fraction / validation_count or lower chunk_length)",
             path, static_cast<long long>(n_val), static_cast<long long>(validation_.stream().num_tokens()),
             static_cast<long long>(T));
  }
  LOG_INFO("%s: train %lld records, %lld tokens, %lld chunks of %lld; validation %lld records, %lld chunks", path,
            static_cast<long long>(n - n_val), static_cast<long long>(train_.stream().num_tokens()),
            static_cast<long long>(train_.num_chunks()), static_cast<long long>(T), static_cast<long long>(n_val),
            static_cast<long long>(validation_.num_chunks()));
}

int64_t DataLoader::chunk_id(int64_t epoch, int64_t index) const {
  LIGER_CHECK(epoch >= 0, "epoch %lld is negative", static_cast<long long>(epoch));
  LIGER_CHECK(index >= 0 && index < num_chunks(), "chunk %lld of epoch %lld is out of range (%lld chunks per epoch)",
              static_cast<long long>(index), static_cast<long long>(epoch), static_cast<long long>(num_chunks()));
  std::lock_guard<std::mutex> lock(cache_->mu);
  if (cache_->epoch != epoch) {
    cache_->order = epoch_permutation(num_chunks(), config_.seed, epoch);
    cache_->epoch = epoch;
  }
  return cache_->order[static_cast<size_t>(index)];
}

Chunk DataLoader::chunk(int64_t epoch, int64_t index) const { return train_.chunk(chunk_id(epoch, index)); }

}  // namespace liger
