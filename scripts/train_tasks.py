#!/usr/bin/env python3
"""Train small cortexcore stacks on the synthetic tasks and export them for Cortex.

    .venv-ref/bin/python scripts/train_tasks.py [--tasks delayed_recall,majority,dyck] [--threads 2]

Tasks (as in cortexcore's evaluation harness, Metta-AI/metta packages/cortex/evaluations):
  delayed_recall  tokens {0,1,2}: a cue bit, then `delay` fillers (2); label = the cue
  majority        tokens {0 pad, 1 (+1), 2 (-1)}, each non-pad with p = 0.3; label = count(1) > count(2)
  dyck            tokens {0 "(", 1 ")"}: a random balanced string of 2·n_pairs, one token
                  flipped with probability 1/2; label = well-formed
The model is cortexcore's SequenceClassifier layout: Embedding -> CortexStack -> Linear on
the last step. Data come from the generators in this file (Python's `random`, seeded);
Cortex has its own generators for fresh data (Sources/Cortex/Tasks), and both evaluate
the exported test set.

Each task writes examples/models/tasks/<task>/:
  model/               the stack (cx.export: config.json + model.safetensors)
  head.safetensors     embed.weight [V, d], classifier.weight [C, d], classifier.bias [C]
  testset.safetensors  tokens [N, T], labels [N] and PyTorch's logits [N, C] (float32)
  task.json            task, parameters, sizes, PyTorch's test accuracy, training summary
Needs the reference venv; CI never runs it (the outputs are committed, ~100 KB each).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("cx_export", os.path.join(ROOT, "bindings/python/cortex_swift/export.py"))
cx_export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cx_export)


def delayed_recall(rng: random.Random, delay: int):
    cue = rng.randint(0, 1)
    return [cue] + [2] * delay, cue


def majority(rng: random.Random, length: int, p: float = 0.3):
    seq = [(2 if rng.random() < 0.5 else 1) if rng.random() < p else 0 for _ in range(length)]
    return seq, int(seq.count(1) > seq.count(2))


def dyck(rng: random.Random, n_pairs: int, neg_fraction: float = 0.5):
    seq, opens, closes = [], 0, 0
    for _ in range(2 * n_pairs):
        if opens == n_pairs or (closes < opens and rng.random() >= 0.5):
            seq.append(1)
            closes += 1
        else:
            seq.append(0)
            opens += 1
    label = 1
    if rng.random() < neg_fraction:
        i = rng.randrange(len(seq))
        seq[i] = 1 - seq[i]
        label = 0
    return seq, label


TASKS = {
    # name: (generator, parameters, vocab, stack blocks)
    "delayed_recall": (delayed_recall, {"delay": 50}, 3, "postup_slstm"),
    "majority": (majority, {"length": 60}, 3, "lstm"),
    "dyck": (dyck, {"n_pairs": 20}, 2, "postup_slstm"),
}


def make_stack(kind: str, d: int):
    from cortex.config import CortexStackConfig, LSTMCellConfig, PassThroughBlockConfig, PostUpBlockConfig, sLSTMCellConfig
    from cortex.stacks import CortexStack

    if kind == "postup_slstm":
        blocks = [PostUpBlockConfig(cell=sLSTMCellConfig(num_heads=2, conv1d_kernel_size=0))]
    else:
        blocks = [PassThroughBlockConfig(cell=LSTMCellConfig())]
    return CortexStack(CortexStackConfig(d_hidden=d, blocks=blocks, post_norm=True))


class SequenceClassifier(nn.Module):
    """cortexcore's evaluation model: embedding, stack, linear head on the last step."""

    def __init__(self, stack, vocab: int, d: int, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.stack = stack
        self.classifier = nn.Linear(d, classes)

    def forward(self, tokens):
        y, _ = self.stack(self.embed(tokens), None)
        return self.classifier(y[:, -1, :])


def dataset(gen, params, n, seed):
    rng = random.Random(seed)
    seqs, labels = zip(*(gen(rng, **params) for _ in range(n)))
    return torch.tensor(seqs, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def train(name: str, d: int = 32, steps: int = 8000, batch: int = 64, seed: int = 0):
    gen, params, vocab, kind = TASKS[name]
    torch.manual_seed(seed)
    model = SequenceClassifier(make_stack(kind, d), vocab, d)
    xtr, ytr = dataset(gen, params, 8000, seed + 1)
    xval, yval = dataset(gen, params, 500, seed + 2)
    xte, yte = dataset(gen, params, 512, seed + 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0, best, step = time.time(), 0.0, 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(xtr), (batch,))
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                best = float((model(xval).argmax(-1) == yval).float().mean())
            model.train()
            print(f"  {name} step {step}: loss {loss.item():.4f} val acc {best:.3f}", flush=True)
            if best >= 0.995:
                break
    model.eval()
    with torch.no_grad():
        logits = model(xte)
    acc = float((logits.argmax(-1) == yte).float().mean())
    out = os.path.join(ROOT, "examples", "models", "tasks", name)
    cx_export.export(model.stack, os.path.join(out, "model"))
    cx_export.write_safetensors(os.path.join(out, "head.safetensors"), {
        "embed.weight": model.embed.weight, "classifier.weight": model.classifier.weight,
        "classifier.bias": model.classifier.bias})
    cx_export.write_safetensors(os.path.join(out, "testset.safetensors"),
                                {"tokens": xte.float(), "labels": yte.float(), "logits": logits})
    from importlib.metadata import version
    doc = {"task": name, "parameters": params, "vocab_size": vocab, "n_classes": 2, "d_hidden": d, "stack": kind,
           "pytorch": {"test_accuracy": acc, "test_samples": len(yte), "cortexcore": version("cortexcore"),
                       "torch": torch.__version__},
           "training": {"steps": step, "batch": batch, "optimizer": "Adam lr 3e-3, grad clip 1.0",
                        "train_samples": len(ytr), "val_accuracy": best, "seconds": round(time.time() - t0, 1),
                        "seed": seed}}
    with open(os.path.join(out, "task.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{name}: test accuracy {acc:.4f} ({len(yte)} samples), {step} steps, {time.time() - t0:.0f} s -> {out}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.tasks.split(","):
        train(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
