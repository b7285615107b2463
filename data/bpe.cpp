#include "data/bpe.h"

#include <algorithm>

namespace liger {

namespace {

// Pre-tokens longer than this are merged every time instead of being cached, and the cache is emptied when it
// holds this many entries; both bound its memory.
constexpr size_t kMaxCachedPieceBytes = 64;
constexpr size_t kMaxCacheEntries = 1 << 18;

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {  // the map only reaches U+0143
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Code point standing for each byte (GPT-2 bytes_to_unicode).
std::array<uint32_t, 256> make_byte_code_points() {
  std::array<uint32_t, 256> cp{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cp[b] = printable ? b : next++;
  }
  return cp;
}

const std::array<uint32_t, 256> kByteCodePoints = make_byte_code_points();

}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int i = 0; i < 256; ++i) append_utf8(kByteCodePoints[static_cast<size_t>(i)], &t[static_cast<size_t>(i)]);
    return t;
  }();
  return table[b];
}

bool unicode_to_bytes(std::string_view s, std::string* out) {
  static const std::array<int, 512> inverse = [] {
    std::array<int, 512> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) inv[kByteCodePoints[static_cast<size_t>(b)]] = b;
    return inv;
  }();
  out->clear();
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;  // three-byte characters and beyond are all past U+01FF
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    *out += static_cast<char>(inverse[cp]);
  }
  return true;
}

BytePairEncoder::BytePairEncoder(Options options) : options_(options) {
  byte_ids_.fill(-1);
}

void BytePairEncoder::add_token(const std::string& bytes, int32_t id) {
  tokens_[bytes] = id;
  if (bytes.size() == 1) byte_ids_[static_cast<unsigned char>(bytes[0])] = id;
}

void BytePairEncoder::add_merge(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  merges_[pair_key(left, right)] = Merge{rank, merged};
}

int32_t BytePairEncoder::find(std::string_view bytes) const {
  auto it = tokens_.find(std::string(bytes));
  return it == tokens_.end() ? -1 : it->second;
}

const BytePairEncoder::Merge* BytePairEncoder::find_merge(int32_t left, int32_t right) const {
  auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BytePairEncoder::encode(std::string_view piece, std::vector<int32_t>* out) const {
  if (options_.whole_piece_lookup) {
    int32_t id = find(piece);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }
  if (piece.size() > kMaxCachedPieceBytes) {
    merge(piece, out);
    return;
  }
  std::string key(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge(piece, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(std::move(key), std::move(ids));
}

// The merge loop: symbols in a doubly linked list over the piece's bytes (a merged symbol keeps the index of its
// left part), candidate pairs in a min-heap ordered by (rank, index). A popped candidate is stale when either of
// its symbols has changed since it was pushed; symbols only grow, so equal ids at the same index mean the same
// pair. O(n log n) for a piece of n bytes.
void BytePairEncoder::merge(std::string_view piece, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev, next;
  };
  std::vector<Symbol> syms;
  syms.reserve(piece.size());
  for (char c : piece) {
    int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id < 0) {
      if (options_.unk_id < 0) continue;
      if (options_.fuse_unk && !syms.empty() && syms.back().id == options_.unk_id) continue;
      id = options_.unk_id;
    }
    auto n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, n + 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  auto sym = [&](int32_t i) -> Symbol& { return syms[static_cast<size_t>(i)]; };

  struct Candidate {
    int32_t rank, pos, left, right, merged;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {  // the pair (pos, its right neighbour), if it has a merge
    if (pos < 0 || sym(pos).next < 0) return;
    int32_t left = sym(pos).id, right = sym(sym(pos).next).id;
    if (const Merge* m = find_merge(left, right)) {
      heap.push_back({m->rank, pos, left, right, m->merged});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& l = sym(c.pos);
    if (l.id != c.left || l.next < 0 || sym(l.next).id != c.right) continue;  // stale
    Symbol& r = sym(l.next);
    l.id = c.merged;
    l.next = r.next;
    if (r.next >= 0) sym(r.next).prev = c.pos;
    r.id = -1;
    push(l.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym(i).next) out->push_back(sym(i).id);
}

SpecialTokenMatcher::SpecialTokenMatcher(const std::vector<std::pair<std::string, int32_t>>& tokens,
                                         const std::string& what) {
  std::vector<std::string> texts;
  for (const auto& [text, id] : tokens) {
    if (text.empty()) continue;
    if (ids_.emplace(text, id).second) texts.push_back(text);
  }
  if (texts.empty()) return;
  // An alternation tries its branches in order, so longest first gives the longest match at each position.
  std::stable_sort(texts.begin(), texts.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  std::string pattern;
  for (const std::string& t : texts) pattern += (pattern.empty() ? "" : "|") + Regex::escape(t);
  regex_ = std::make_unique<Regex>(pattern, what);
}

}  // namespace liger
