#!/usr/bin/env python3
"""LoRA gradients of the bundled stories260K model (softmax attention kept, no conversion) from transformers + PEFT,
the reference for liger's LoRA backward (tests/model/test_peft_golden.cpp, relative error <= 1e-4).

Two cases, each a directory under tests/golden/peft_stories260k/:
  init/   the adapter as PEFT initializes it (A Kaiming-uniform, B = 0), so only dB is non-zero;
  step1/  the same adapter after one AdamW step (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01), so B != 0 and dA != 0.
Each holds the PEFT adapter (adapter_model.safetensors, adapter_config.json, as save_pretrained writes them), and
batch.safetensors: input_ids (1, T) I64, labels (1, T) I64 (-100 = not supervised, HF convention: the loss at
position t predicts labels[t + 1]... shifted inside the model), loss (1,) F64, and the gradient of every LoRA tensor
under its PEFT name + ".grad" (F64). The forward runs in float64 on the CPU with eager attention.

Run on the GPU machine (torch, transformers, peft, sentencepiece):  python3 tools/golden/make_peft_golden.py
"""
import os
import sys

import peft
import sentencepiece
import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "assets", "stories260K", "hf")
OUT = os.path.join(ROOT, "tests", "golden", "peft_stories260k")
TEXTS = [
    "Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend Lily.",
    "One day, a big red ball fell from the sky. The children laughed and played until the sun went down.",
]


def batch(sp, text, masked):
    ids = [1] + sp.encode(text)
    labels = list(ids)
    for i in range(min(masked, len(labels))):
        labels[i] = -100  # the prompt part: not supervised
    return torch.tensor([ids]), torch.tensor([labels])


def grads_of(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    g = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            g[name.replace(".default", "") + ".grad"] = p.grad.detach().clone()
    return out.loss.detach(), g


def save_case(model, name, ids, labels, loss, grads):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tensors = {"input_ids": ids.to(torch.int64).contiguous(), "labels": labels.to(torch.int64).contiguous(),
               "loss": loss.reshape(1).to(torch.float64)}
    tensors.update({k: v.to(torch.float64).contiguous() for k, v in grads.items()})
    save_file(tensors, os.path.join(d, "batch.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__})
    print(name, "loss %.6f" % loss.item(), "tensors", len(grads), "->", d)


def main():
    torch.manual_seed(0)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    base = transformers.AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="eager",
                                                             dtype=torch.float64)
    cfg = peft.LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj"],
                          bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, cfg).to(torch.float64)
    model.train()
    ids, labels = batch(sp, TEXTS[0], masked=6)
    loss, g = grads_of(model, ids, labels)
    save_case(model, "init", ids, labels, loss, g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.01)
    opt.step()
    ids, labels = batch(sp, TEXTS[1], masked=4)
    loss, g = grads_of(model, ids, labels)
    save_case(model, "step1", ids, labels, loss, g)
    print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
