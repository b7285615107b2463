"""Prints the expected ids in tests/data/test_tokenizers.cpp, computed with the reference libraries.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers tiktoken sentencepiece
    /tmp/tokvenv/bin/python tests/data/make_tokenizer_references.py ../shared/data

Used for the values in the test: tokenizers 0.23.3, tiktoken 0.14.0, sentencepiece 0.2.0. The Llama-3 encoder is
built as Meta's llama/tokenizer.py builds it (same pattern and special tokens), with allowed_special="all".
"""
import functools
import os
import sys

import sentencepiece
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import Tokenizer

DATA = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
HERE = os.path.dirname(os.path.abspath(__file__))

STRINGS = [
    "Hello world",
    "I'm sure DON'T you'll we've THEY'RE it's",
    "12345 and 3.14159, 1,000,000",
    "tabs\tand  multiple   spaces\n\n\nnew lines\r\n end  ",
    "h\u00e9llo w\u00f6rld \u2014 na\u00efve caf\u00e9 e\u0301",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u4e2d\u6587 \ud55c\uad6d\uc5b4",
    "emoji \U0001f600\U0001f44d\U0001f3fd family \U0001f468\u200d\U0001f469\u200d\U0001f467!",
    "a\u00a0b\u0085c\u2028d \u3000e",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "\u0161\u0165\u017e \u0391\u03b8\u03ae\u03bd\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "x'S 'Ll 'veRY '\u017f",
    "Z\u180e's \u180e}\t !\u0085! x",
    "\u0130!\r\n\u180e'llZ\U0001d400\U0001f600<|eot_id|>\x1c\x1d!\x1f",
]
LLAMA2_STRINGS = ["Hello world", "  two  spaces and caf\u00e9 \U0001f600", "\nnew line first"]
FIXTURES = {
    "hf_bpe_split_nfc.json": ["abc", " abc", "12312", "cafe\u0301", "ab<sep>c", "<s>ab", "a\n\nb", "axb"],
    "hf_bpe_gpt2_style.json": ["ab", "a's", "12", "a12b", "xyz", "ab  ab"],
}


def llama3():
    names = (["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)] +
             ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"] +
             [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])
    pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
    ranks = load_tiktoken_bpe(os.path.join(DATA, "tokenizers/llama3/tokenizer.model"))
    enc = tiktoken.Encoding(name="llama3", pat_str=pat, mergeable_ranks=ranks,
                            special_tokens={n: len(ranks) + i for i, n in enumerate(names)})
    return lambda s: enc.encode(s, allowed_special="all")


def smollm2():
    tok = Tokenizer.from_file(os.path.join(DATA, "tokenizers/smollm2/tokenizer.json"))
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def cpp_string(s):
    out = ""
    for ch in s:
        o = ord(ch)
        if ch in '\n\r\t"\\':
            out += {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}[ch]
        elif 32 <= o < 127:
            out += ch
        elif o < 32 or o == 127:
            out += "\\%03o" % o  # octal: at most three digits, unlike \x
        else:
            out += "\\u%04x" % o if o < 0x10000 else "\\U%08x" % o
    return '"' + out + '"'


def fingerprint(ids):  # the test's fingerprint(): h = h * 1000003 + id, mod 2^64
    return functools.reduce(lambda h, i: (h * 1000003 + i) & 0xFFFFFFFFFFFFFFFF, ids, 0)


def main():
    encoders = {"SmolLM2": smollm2(), "Llama-3": llama3()}
    for name, encode in encoders.items():
        print(f"// {name}")
        for s in STRINGS:
            print("    {%s, {%s}}," % (cpp_string(s), ", ".join(map(str, encode(s)))))
    print("// text files: name, SmolLM2 count, fingerprint, Llama-3 count, fingerprint")
    text_dir = os.path.join(DATA, "text")
    for f in sorted(os.listdir(text_dir)):
        text = open(os.path.join(text_dir, f), "rb").read().decode("utf-8")
        a, b = encoders["SmolLM2"](text), encoders["Llama-3"](text)
        print('    {"%s", %d, 0x%016xull, %d, 0x%016xull},' % (f, len(a), fingerprint(a), len(b), fingerprint(b)))
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(DATA, "tokenizers/llama2/tokenizer.model"))
    print("// Llama-2 (SentencePiece, with BOS)")
    for s in LLAMA2_STRINGS:
        print("    {%s, {%s}}," % (cpp_string(s), ", ".join(map(str, [sp.bos_id()] + sp.encode(s)))))
    for f, strings in FIXTURES.items():
        tok = Tokenizer.from_file(os.path.join(HERE, f))
        print(f"// {f} (encode with the post_processor, as add_bos=true)")
        for s in strings:
            print("    {%s, {%s}}," % (cpp_string(s), ", ".join(map(str, tok.encode(s).ids))))


if __name__ == "__main__":
    main()
