// Token streams and packing into fixed-length chunks (rules at the top of data/dataset.h).
#include <algorithm>

#include "core/check.h"
#include "data/dataset.h"

namespace liger {

// ---- TokenStream -----------------------------------------------------------------------------------------------

void TokenStream::append(const Sample& sample, int64_t source) {
  LIGER_CHECK(!sample.tokens.empty(), "record %lld: a document must have at least one token",
              static_cast<long long>(source));
  LIGER_CHECK(sample.tokens.size() == sample.labels.size(), "record %lld: %zu tokens but %zu labels",
              static_cast<long long>(source), sample.tokens.size(), sample.labels.size());
  for (size_t t = 0; t < sample.tokens.size(); t++) {
    const int32_t label = sample.labels[t];
    LIGER_CHECK(label == sample.tokens[t] || label == kIgnoreIndex,
                "record %lld: label %d at position %zu is neither the token (%d) nor %d", static_cast<long long>(source),
                label, t, sample.tokens[t], kIgnoreIndex);
    tokens_.push_back(sample.tokens[t]);
    supervised_.push_back(label != kIgnoreIndex ? 1 : 0);
  }
  begin_.push_back(num_tokens());
  source_.push_back(source);
}

void TokenStream::append_document(const TokenStream& other, int64_t d) {
  LIGER_CHECK(d >= 0 && d < other.num_documents(), "document %lld is out of range (%lld documents)",
              static_cast<long long>(d), static_cast<long long>(other.num_documents()));
  const int64_t b = other.begin_[d], e = other.begin_[d + 1];
  tokens_.insert(tokens_.end(), other.tokens_.begin() + b, other.tokens_.begin() + e);
  supervised_.insert(supervised_.end(), other.supervised_.begin() + b, other.supervised_.begin() + e);
  begin_.push_back(num_tokens());
  source_.push_back(other.source_[d]);
}

int64_t TokenStream::document_of(int64_t s) const {
  LIGER_ASSERT(s >= 0 && s < num_tokens());
  // begin_ is strictly increasing (documents are never empty): the last begin <= s.
  return static_cast<int64_t>(std::upper_bound(begin_.begin(), begin_.end(), s) - begin_.begin()) - 1;
}

int64_t TokenStream::num_supervised() const {
  return static_cast<int64_t>(std::count(supervised_.begin(), supervised_.end(), uint8_t{1}));
}

// ---- Chunk -----------------------------------------------------------------------------------------------------

int64_t Chunk::num_targets() const {
  return static_cast<int64_t>(targets.size()) -
         static_cast<int64_t>(std::count(targets.begin(), targets.end(), kIgnoreIndex));
}

std::vector<int32_t> Chunk::segment_ids() const {
  std::vector<int32_t> seg(input_ids.size(), 0);
  for (size_t i = 1; i < doc_starts.size(); i++) {
    std::fill(seg.begin() + doc_starts[i], seg.end(), static_cast<int32_t>(i));
  }
  return seg;
}

// ---- PackedDataset ---------------------------------------------------------------------------------------------

PackedDataset::PackedDataset(TokenStream stream, int64_t chunk_length, bool pack_across_documents)
    : stream_(std::move(stream)), chunk_length_(chunk_length), pack_across_(pack_across_documents) {
  LIGER_CHECK(chunk_length >= 2, "data: chunk_length = %lld is too short (must be >= 2: a chunk needs an input and a "
              "target)", static_cast<long long>(chunk_length));
  const int64_t T = chunk_length_;
  const int64_t raw = num_raw_chunks();
  // Keep the chunks with at least one target: walk positions s -> s + 1 with the document of s + 1 tracked.
  for (int64_t k = 0; k < raw; k++) {
    const int64_t s0 = k * T;
    int64_t d = stream_.document_of(s0);
    int64_t next = stream_.document_end(d);  // s + 1 == next: s + 1 starts document d + 1
    bool any = false;
    for (int64_t s = s0; s < s0 + T - 1 && !any; s++) {
      const bool crosses = s + 1 == next;
      if (crosses) next = stream_.document_end(++d);
      any = stream_.supervised(s + 1) && (pack_across_ || !crosses);
    }
    if (any) kept_.push_back(k);
  }
}

int64_t PackedDataset::num_raw_chunks() const {
  const int64_t n = stream_.num_tokens();
  return n > 0 && chunk_length_ > 0 ? (n - 1) / chunk_length_ : 0;
}

Chunk PackedDataset::chunk(int64_t k) const {
  LIGER_CHECK(k >= 0 && k < num_chunks(), "chunk %lld is out of range (%lld chunks)", static_cast<long long>(k),
              static_cast<long long>(num_chunks()));
  const int64_t T = chunk_length_;
  Chunk c;
  c.index = kept_[k];
  const int64_t s0 = c.index * T;
  c.input_ids.resize(T);
  c.targets.assign(T, kIgnoreIndex);
  c.doc_index.resize(T);
  c.doc_starts.push_back(0);
  int64_t d = stream_.document_of(s0);
  int64_t next = stream_.document_end(d);
  c.continues_document = s0 != stream_.document_begin(d);
  for (int64_t t = 0; t < T; t++) {
    const int64_t s = s0 + t;
    if (s == next) {  // never at t = 0: s0 < document_end(d)
      next = stream_.document_end(++d);
      if (!pack_across_) c.doc_starts.push_back(static_cast<int32_t>(t));
    }
    c.input_ids[t] = stream_.token(s);
    c.doc_index[t] = d;
  }
  // target[T - 1] stays -100: the reference's loss pairs logits[:, :-1] with labels[:, 1:] inside the chunk.
  for (int64_t t = 0; t + 1 < T; t++) {
    const bool same_doc = c.doc_index[t + 1] == c.doc_index[t];
    if (pack_across_ || same_doc) c.targets[t] = stream_.label(s0 + t + 1);
  }
  return c;
}

}  // namespace liger
