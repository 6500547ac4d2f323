#!/usr/bin/env python3
"""Generate the golden files every test suite (Swift, C, Python) checks.

Reference: cortexcore 0.1.6 (PyPI `cortexcore`, imported as `cortex`), run on CPU in
fp32 with torch 2.11. Needs the reference venv (see README, "Regenerating goldens");
CI never runs this: its outputs are committed under Tests/goldens/.

    make_goldens.py                 every group
    make_goldens.py xl,mlstm        some groups (lstm, cconv, agalite, slstm, mlstm, xl, axon,
                                    scaffolds, routed, auto, mythos, sidecars, spike, example)
    CORTEX_GOLDENS_OUT=/tmp/g make_goldens.py ...   write elsewhere (to compare with the
                                    committed files)

The groups live in scripts/goldens/: common.py (the cases of a stack golden, the
writers, the registry), cores.py (one group per core: a new core adds a function there
with @group("name")), stacks.py, mythos.py, sidecars.py, spike.py.

For each model it writes a model directory (config.json + model.safetensors, via
cortex_swift.export, i.e. the module's own state_dict) and `cases.safetensors` with
inputs and the reference's outputs, plus `manifest.json` describing every case.
Cases:
  seq            sequence mode from a zero state, resets=None (nn.LSTM fused path)
  step           the reference's step() T times from a zero state (step path)
  resets_seq     sequence mode with a [B, T] reset mask, from a non-zero state
  resets_step    step mode with [B] resets per step, same data (step path)
  carry          two sequence calls, state carried from the first to the second
  rows_seq       [B]-shaped resets in sequence mode = "reset before the first step"
                 (the reference LSTM rejects [B] there; expected output comes from the
                 equivalent [B, T] mask with only t = 0 set — Cortex's documented meaning)
  b1             batch 1
Every case stores the final state under "<case>/state/<path>".

Models: lstm_stack (two LSTM blocks, biased and not), cconv_depthwise (CausalConv1d,
kernel 4 with bias and kernel 2 without), cconv_mixing (channel mixing, kernels 3 and 5,
and a kernel-0 identity), agalite (2 heads/eta 3/r 2, and 3 heads/eta 2/r 1/eps 1e-4),
slstm (2 heads with a kernel-4 conv, 3 heads without; recurrence, biases and norm
weights perturbed, since the reference initialises the recurrence to zero), mlstm
(chunk 4 so T=9 runs chunkwise with resets inside chunks, and a chunk-64 block; the
'resets_seq' and 'resets_step' cases then differ in the reference itself), xl (mem_len 3
and 6, head_dim 5, with and without biases; its step and sequence paths differ in the
reference even without resets, so 'step' and 'seq' hold different outputs); axon (five
AxonCell blocks: the default untraced linear input map, SRHT with and without permutation,
full rank, no mixing; identity/SiLU/tanh/ReLU), axon_srht_cpu (the SRHT through
cortexcore's CPU butterfly, loaded with "cortex_srht": "cpu_reference"), slstm_axon,
mlstm_axon and xl_axon (use_axon_layer / use_axon_qkv with AxonLayer's defaults and
with an explicit axon config).

Scaffolds: scaffolds_up (PreUp around LSTM and mLSTM, PreUpGated around sLSTM, PostUp
around a conv, PostUpGated around AGaLiTe), scaffolds_adapter (Adapters around PreUp,
PassThrough(XL) and PostUp(Axon)), column (three experts with top-k prior and token
refinement, a single expert, two experts without refinement), auto_axms (cortexcore's default
four-expert stack, cortexcore's auto builder with "AXMS", at 2 layers); parameters the reference initialises to zero
or near zero (adapter up/gate, router, mixer, alphas) are perturbed so they matter.
auto_configs.json: recipes and the config cortexcore's build_cortex_auto_config returns.

SRHT: cortexcore's CPU `_fwht_` computes [a+b, a] instead of [a+b, a-b] (it writes
through aliased views). Every golden except axon_srht_cpu is made with `_fwht_` patched to the true
Walsh-Hadamard butterfly below (what the CUDA kernel computes, and Cortex's default).

For the CausalConv1d models every sequence call passes an
explicit [B, T] reset mask (zeros where none is wanted): cortexcore's fast path drops
the carried window otherwise; Cortex always honours it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens"))

import torch  # noqa: E402

import common  # noqa: E402
import cores, stacks, mythos, sidecars, spike  # noqa: E402,F401  (each registers its groups)


def main():
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(common.GROUPS)
    unknown = [n for n in names if n not in common.GROUPS]
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; groups: {', '.join(common.GROUPS)} (none: all)")
    torch.set_num_threads(1)
    for n in names:
        common.GROUPS[n]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
