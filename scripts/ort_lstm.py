"""The LSTM stack's math as an ONNX graph, for ONNX Runtime as a benchmark peer.

A Cortex model folder of a cortexcore LSTM stack (PassThrough(LSTM) blocks, post_norm
LayerNorm; what cx.export writes) becomes one ONNX model: an ONNX `LSTM` node per block
(ONNX Runtime's own fused kernel; the gate rows reordered from PyTorch's i, f, g, o to
ONNX's i, o, f, c) and `LayerNormalization`. Built with onnx.helper from the weights
alone, so it needs neither torch nor cortexcore.

    sess = ort_lstm.session(model_dir, threads)   # inputs x [B, T, D], h{i}/c{i} [1, B, D]
    ort_lstm.run(sess, x, state) -> (y, state)    # state: {name: array}, None = zeros
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np


def _read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", f"{name}: {e['dtype']}"
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[a:b], np.float32).reshape(e["shape"])
    return out


def _iofc(w, h):
    """PyTorch's gate blocks i, f, g, o -> ONNX's i, o, f, c (along the first axis)."""
    i, f, g, o = (w[k * h:(k + 1) * h] for k in range(4))
    return np.concatenate([i, o, f, g])


def build(model_dir):
    """The ONNX model (onnx.ModelProto) and the number of layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = json.load(open(os.path.join(model_dir, "config.json")))["config"]
    w = _read_safetensors(os.path.join(model_dir, "model.safetensors"))
    d = cfg["d_hidden"]
    blocks = cfg["blocks"]
    assert all((b.get("cell") or {}).get("cell_type") == "lstm" and b.get("block_type", "passthrough") == "passthrough"
               for b in blocks), "an ONNX peer exists for PassThrough(LSTM) stacks only"
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", d])]
    outputs = []
    nodes.append(helper.make_node("Transpose", ["x"], ["x_tbd"], perm=[1, 0, 2]))
    cur = "x_tbd"
    for i in range(len(blocks)):
        p = f"blocks.{i}.cell.net."
        W = _iofc(w[p + "weight_ih_l0"], d)[None]
        R = _iofc(w[p + "weight_hh_l0"], d)[None]
        bias = np.concatenate([_iofc(w[p + "bias_ih_l0"], d), _iofc(w[p + "bias_hh_l0"], d)])[None]
        for name, arr in ((f"W{i}", W), (f"R{i}", R), (f"B{i}", bias)):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        for s in ("h", "c"):
            inputs.append(helper.make_tensor_value_info(f"{s}{i}", TensorProto.FLOAT, [1, "B", d]))
            outputs.append(helper.make_tensor_value_info(f"{s}{i}_out", TensorProto.FLOAT, [1, "B", d]))
        nodes.append(helper.make_node("LSTM", [cur, f"W{i}", f"R{i}", f"B{i}", "", f"h{i}", f"c{i}"],
                                      [f"y{i}", f"h{i}_out", f"c{i}_out"], hidden_size=d))
        nodes.append(helper.make_node("Squeeze", [f"y{i}", "axis1"], [f"y{i}_tbd"]))
        cur = f"y{i}_tbd"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes.append(helper.make_node("Transpose", [cur], ["y_btd"], perm=[1, 0, 2]))
    if cfg.get("post_norm", True):
        inits.append(numpy_helper.from_array(w["norm.weight"].copy(), "norm_w"))
        inits.append(numpy_helper.from_array(w["norm.bias"].copy(), "norm_b"))
        nodes.append(helper.make_node("LayerNormalization", ["y_btd", "norm_w", "norm_b"], ["y"], axis=-1, epsilon=1e-5))
    else:
        nodes.append(helper.make_node("Identity", ["y_btd"], ["y"]))
    outputs.insert(0, helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", d]))
    graph = helper.make_graph(nodes, "cortex_lstm_stack", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, len(blocks), d


def session(model_dir, threads):
    """An ONNX Runtime session on `threads` intra-op threads (sequential execution)."""
    import onnxruntime as ort

    model, layers, d = build(model_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sess.cortex_layers, sess.cortex_d = layers, d
    return sess


def run(sess, x, state=None):
    """y [B, T, D] and the new state from x [B, T, D] and a state (None: zeros)."""
    B = x.shape[0]
    if state is None:
        z = np.zeros((1, B, sess.cortex_d), np.float32)
        state = {f"{s}{i}": z for i in range(sess.cortex_layers) for s in ("h", "c")}
    feeds = dict(state, x=x)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    return outs[0], {n[:-4]: v for n, v in zip(names[1:], outs[1:])}


def timings(sess, seq_len, measures, timeit):
    """Each of `measures` timed with `timeit(fn, warmup=...)`: "step1" / "step32" in ms per
    step (one `run` per step, the state carried), "seq1" / "seq32" in tokens/s."""
    out = {}
    for m in measures:
        B = 32 if m.endswith("32") else 1
        if m.startswith("step"):
            x = np.random.randn(B, 1, sess.cortex_d).astype(np.float32)
            st = [None]

            def step():
                _, st[0] = run(sess, x, st[0])

            out[m] = 1e3 * timeit(step, warmup=10)
        else:
            x = np.random.randn(B, seq_len, sess.cortex_d).astype(np.float32)
            out[m] = B * seq_len / timeit(lambda: run(sess, x), warmup=2)
    return out


def write_random_stack(model_dir, d=256, layers=2, seed=0):
    """A PassThrough(LSTM) stack folder with weights drawn like nn.LSTM's
    (uniform ±1/sqrt(d)), for benchmarks on a machine without torch."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(d)
    tensors = {}
    for i in range(layers):
        p = f"blocks.{i}.cell.net."
        for name, shape in (("weight_ih_l0", (4 * d, d)), ("weight_hh_l0", (4 * d, d)), ("bias_ih_l0", (4 * d,)),
                            ("bias_hh_l0", (4 * d,))):
            tensors[p + name] = rng.uniform(-k, k, shape).astype(np.float32)
    tensors["norm.weight"] = np.ones(d, np.float32)
    tensors["norm.bias"] = np.zeros(d, np.float32)
    cell = {"hidden_size": None, "cell_type": "lstm", "num_layers": 1, "bias": True, "dropout": 0.0, "proj_size": 0}
    config = {"format": "cortex", "format_version": 1, "architecture": "cortex_stack",
              "config": {"blocks": [{"cell": cell, "block_type": "passthrough"} for _ in range(layers)], "d_hidden": d,
                         "post_norm": True, "compile_blocks": True, "routed_adapter": None}}
    os.makedirs(model_dir, exist_ok=True)
    json.dump(config, open(os.path.join(model_dir, "config.json"), "w"))
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(model_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
