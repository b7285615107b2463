// SentencePiece tokenizer.model (Llama-2, stories260K tok512.model): a wrapper around libsentencepiece.
#include <sentencepiece_processor.h>

#include "core/check.h"
#include "data/tokenizer.h"

namespace liger {

namespace {

const std::string kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁', SentencePiece's stand-in for a space

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    auto status = sp_.Load(path);
    if (!status.ok()) {
      // The library's message for bytes that are not a ModelProto names its own source line; say it plainly.
      std::string why = status.ToString();
      if (why.find("ParseFromArray") != std::string::npos) why = "the bytes do not parse as a ModelProto";
      LIGER_FAIL("%s: not a SentencePiece model (%s)", path.c_str(), why.c_str());
    }
    LIGER_CHECK(sp_.GetPieceSize() > 0, "%s: not a SentencePiece model (no pieces)", path.c_str());
    sp_.Decode(std::vector<int>{sp_.unk_id()}, &unk_surface_);
    // The library drops the leading '▁' of the first piece only when the model adds a dummy prefix when encoding;
    // the installed headers do not expose the model's normalizer settings, so ask the decoder about one piece.
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      const std::string& piece = sp_.IdToPiece(id);
      if (plain(id) && piece.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        std::string text;
        sp_.Decode(std::vector<int>{id}, &text);
        strip_first_space_ = text != with_spaces(piece, false);
        break;
      }
    }
    std::vector<int32_t> eos;
    if (sp_.eos_id() >= 0) eos.push_back(sp_.eos_id());
    set_special_ids(sp_.bos_id(), eos);
  }

  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int> pieces;
    auto status = sp_.Encode(text, &pieces);
    LIGER_CHECK(status.ok(), "%s: cannot encode text: %s", path_.c_str(), status.ToString().c_str());
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 1);
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    for (int32_t id : ids) check_id(id);
    std::string text;
    auto status = sp_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    LIGER_CHECK(status.ok(), "%s: cannot decode: %s", path_.c_str(), status.ToString().c_str());
    return text;
  }

  std::string decode_piece(int32_t prev_id, int32_t id) const override {
    check_id(id);
    if (sp_.IsControl(id)) return "";
    if (sp_.IsUnknown(id)) return unk_surface_;
    const std::string& piece = sp_.IdToPiece(id);
    if (sp_.IsByte(id)) return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));  // <0xAB>
    bool at_start = prev_id < 0 || (prev_id < sp_.GetPieceSize() && sp_.IsControl(prev_id));
    return with_spaces(piece, strip_first_space_ && at_start);
  }

  int32_t token_to_id(const std::string& token) const override {
    int id = sp_.PieceToId(token);
    // PieceToId answers unk_id for an unknown piece.
    return id >= 0 && sp_.IdToPiece(id) == token ? id : -1;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  // The text of a piece: each '▁' is a space; with drop_first, a leading '▁' is dropped.
  static std::string with_spaces(const std::string& piece, bool drop_first) {
    std::string text;
    size_t i = drop_first && piece.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0 ? kSpaceSymbol.size() : 0;
    while (i < piece.size()) {
      if (piece.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        text += ' ';
        i += kSpaceSymbol.size();
      } else {
        text += piece[i++];
      }
    }
    return text;
  }
  bool plain(int id) const { return !sp_.IsControl(id) && !sp_.IsUnknown(id) && !sp_.IsByte(id); }
  void check_id(int32_t id) const {
    LIGER_CHECK(id >= 0 && id < sp_.GetPieceSize(), "%s: token id %d is outside the vocabulary (%d ids)", path_.c_str(),
                id, sp_.GetPieceSize());
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  std::string unk_surface_;        // what an unknown token decodes to (" \xE2\x81\x87 " by default)
  bool strip_first_space_ = true;  // drop the leading space of the first word (add_dummy_prefix models)
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace liger
