#!/usr/bin/env python3
"""Builds small random-weight HF models of every model type liger supports, saves each as an HF directory
(config.json + model.safetensors, fp32) under tests/golden/<name>/, and saves transformers' logits for a fixed
batch of token ids as tests/golden/<name>/golden.safetensors (input_ids I64 (B, T), logits F32 (B, T, V)).

The forward runs in float64 on the CPU with eager attention, so the saved logits are a reference for the C++
fp32 forward (tests/model/test_hf_golden.cpp, relative error <= 1e-5).

Run on the GPU machine (it has torch + transformers):  python3 tools/golden/make_hf_golden.py --out tests/golden
"""
import argparse, json, os, sys

import torch
import transformers
from safetensors.torch import save_file

B, T = 2, 19

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              vocab_size=160, max_position_embeddings=512, rms_norm_eps=1e-5, hidden_act="silu",
              bos_token_id=1, eos_token_id=2, initializer_range=0.02)

# name -> (model_type, extra config kwargs, rope parameters)
CASES = {
    # Llama-3 / 3.2 style: GQA, tied embeddings, llama3 rope scaling whose three frequency bands are all hit
    # (head_dim 16, theta 5e5: wavelengths 6.3, 32.5, 168, ... against 64/4 = 16 and 64/1 = 64).
    "llama3_gqa_tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True, attention_bias=False),
                        dict(rope_theta=500000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64)),
    # Llama-2 style: multi-head (no GQA), untied LM head, plain rope.
    "llama2_mha_untied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=False, attention_bias=False),
                          dict(rope_theta=10000.0, rope_type="default")),
    # Mistral: GQA, untied, sliding window shorter than the sequence so the window mask matters.
    "mistral_swa_untied": ("mistral", dict(num_key_value_heads=2, tie_word_embeddings=False, sliding_window=7,
                                           head_dim=16),
                           dict(rope_theta=10000.0, rope_type="default")),
    # Qwen2 / Qwen2.5: q/k/v biases, GQA, tied.
    "qwen2_bias_tied": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=False),
                        dict(rope_theta=1000000.0, rope_type="default")),
    # Qwen3: per-head q/k RMSNorm, head_dim (32) != hidden / heads (16), untied.
    "qwen3_qknorm_untied": ("qwen3", dict(num_key_value_heads=2, tie_word_embeddings=False, head_dim=32,
                                          attention_bias=False, use_sliding_window=False),
                            dict(rope_theta=1000000.0, rope_type="default")),
}


def make_config(model_type, extra, rope):
    kw = dict(COMMON)
    kw.update(extra)
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    rope_kw = {k: v for k, v in rope.items()}
    try:  # transformers >= 5: rope_parameters
        cfg = cfg_cls(**kw, rope_parameters=rope_kw)
    except TypeError:
        theta = rope_kw.pop("rope_theta")
        scaling = None if rope_kw.get("rope_type") == "default" else rope_kw
        cfg = cfg_cls(**kw, rope_theta=theta, rope_scaling=scaling)
    return cfg


def randomize(model, gen):
    """Replaces HF's small-std init with weights that give O(1) activations and a peaked attention."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:
                fan_in = p.shape[1]
                scale = 1.0 if "embed_tokens" in name else 1.5 / fan_in ** 0.5
                p.copy_(scale * torch.randn(p.shape, generator=gen))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden")
    args = ap.parse_args()
    print("torch", torch.__version__, "transformers", transformers.__version__)
    for i, (name, (model_type, extra, rope)) in enumerate(CASES.items()):
        gen = torch.Generator().manual_seed(1000 + i)
        cfg = make_config(model_type, extra, rope)
        cfg._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        model = model.to(torch.float32)
        randomize(model, gen)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        out_dir = os.path.join(args.out, name)
        os.makedirs(out_dir, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        ids = torch.randint(0, cfg.vocab_size, (B, T), generator=gen)
        m64 = model.to(torch.float64).eval()
        with torch.no_grad():
            logits = m64(input_ids=ids, use_cache=False).logits
        save_file({"input_ids": ids.to(torch.int64).contiguous(),
                   "logits": logits.to(torch.float32).contiguous()},
                  os.path.join(out_dir, "golden.safetensors"),
                  metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                            "note": "float64 eager forward on CPU"})
        with open(os.path.join(out_dir, "config.json")) as f:
            saved = json.load(f)
        print(name, "params", sum(p.numel() for p in model.parameters()),
              "logit std %.3f" % logits.std().item(), "config keys:", sorted(saved.keys()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
