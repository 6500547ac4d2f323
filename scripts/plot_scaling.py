#!/usr/bin/env python3
"""Draw scripts/bench_scaling.py's JSON files as one figure (docs/scaling.png).

    python3 scripts/plot_scaling.py OUT.png RESULTS.json [RESULTS.json ...]

One panel per workload measure: throughput (or 1 / latency) against threads, Cortex,
PyTorch and ONNX Runtime where measured, on log-log axes with the ideal line from
Cortex's 1-thread point. Needs matplotlib.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [("lstm", "seq32", "LSTM stack, sequence B=32", "tokens/s", False),
          ("lstm", "step32", "LSTM stack, step B=32", "steps/s", True),
          ("auto", "seq32", "AXMS stack, sequence B=32", "tokens/s", False),
          ("auto", "step32", "AXMS stack, step B=32", "steps/s", True),
          ("mythos", "prefill8_ms", "OpenMythos GQA, prefill 128 tokens B=8", "prefills/s", True),
          ("mythos", "decode1_tok_s", "OpenMythos GQA, decode B=1", "tokens/s", False)]
COLORS = {"cortex": "tab:blue", "pytorch": "tab:orange", "onnxruntime": "tab:green"}


def main():
    out, files = sys.argv[1], sys.argv[2:]
    data = {}
    machine = ""
    for f in files:
        d = json.load(open(f))
        machine = d.get("machine", {}).get("cpu", machine)
        data.update({k: v for k, v in d.items() if k != "machine"})
    panels = [p for p in PANELS if p[0] in data]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.2 * rows), squeeze=False)
    for ax, (kind, key, title, unit, invert) in zip(axes.flat, panels):
        rs = data[kind]
        threads = [r["threads"] for r in rs]
        for side in ("cortex", "pytorch", "onnxruntime"):
            if side not in rs[0]:
                continue
            ys = [(1e3 / r[side][key]) if invert else r[side][key] for r in rs]
            ax.plot(threads, ys, "o-", color=COLORS[side], label=side)
            if side == "cortex":
                ax.plot(threads, [ys[0] * t / threads[0] for t in threads], ":", color=COLORS[side], alpha=0.5,
                        label="ideal (Cortex 1 thread × n)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(threads)
        ax.set_xticklabels([str(t) for t in threads])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("threads")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Scaling with threads ({machine}, 16 cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
