"""Every Python block of README.md runs as written. Each block runs in its own process, in
a folder where the names it uses exist: `examples/` (the shipped models), `my_mythos`,
`my_sidecar`, `decoder_dir` and `dir` (golden or example models under those names), and
the arrays a block takes as given (`ids`, `h`, `x`, ... made below, per block). A block
whose first line says `# needs torch` (or transformers, ray, PostgreSQL) runs where those
exist and is skipped, by name, elsewhere. A README block without an entry below fails:
new blocks must be given their inputs here."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import GOLDENS, ROOT

README = os.path.join(ROOT, "README.md")

# Folder names the README uses, and what they are here.
LINKS = {
    "examples": os.path.join(ROOT, "examples"),
    "my_mythos": os.path.join(GOLDENS, "mythos", "gqa", "model"),
    "my_sidecar": os.path.join(GOLDENS, "sidecars", "model_fast_weight", "model"),
    "decoder_dir": os.path.join(GOLDENS, "spike", "decoder_small", "model"),
    "dir": os.path.join(ROOT, "examples", "models", "lstm_stack"),
}

COMMON = "import numpy as np\nimport cortex_swift as cx\n"

# Per block (by its first code line): the inputs it takes as given.
INPUTS = {
    "import numpy as np": "",
    "cx.export(torch_cortex_stack": """
from cortex.config import CortexStackConfig, LSTMCellConfig, PassThroughBlockConfig
from cortex.stacks import CortexStack
torch_cortex_stack = CortexStack(CortexStackConfig(d_hidden=8, blocks=[PassThroughBlockConfig(cell=LSTMCellConfig())]))
""",
    "lm = cx.load(\"my_mythos\")": """
rng = np.random.default_rng(0)
ids = rng.integers(0, 256, (2, 5))
prompt = rng.integers(0, 256, (2, 4))
next_ids = rng.integers(0, 256, (2, 1))
""",
    "sidecar = cx.load(\"my_sidecar\")": """
layer = 1                                    # a hooked layer of the golden sidecar
D = 24
h = np.random.default_rng(0).standard_normal((1, 3, D)).astype(np.float32)
logits = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
next_ids = np.array([5])
""",
    "from cortex_swift.hf import attach_sidecar": """
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
sidecar = cx.load("my_sidecar")
store = cx.SessionStore("sessions.db")
torch.manual_seed(0)
hf_model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=4,
                                        num_attention_heads=2, num_key_value_heads=1)).eval()
input_ids = torch.randint(0, 64, (1, 6))
""",
    "dec = cx.load(\"decoder_dir\")": """
neuron_ids, time_bins, values = np.array([1, 2, 3]), np.array([0, 5, 119]), np.array([1, 2, 1])
offsets = np.array([0, 3])
n0, t0, v0 = [4, 7], [10, 11], [1, 1]
""",
    "s = dec.stream(": """
dec = cx.load("decoder_dir")
neuron_ids, time_bins, values = np.array([1, 2]), np.array([0, 9]), np.array([1, 1])
""",
    "import ray, cortex_swift.scaleout as so": """
import os
url = os.environ["CORTEX_PG_URL"]
x1 = np.zeros((2, 4, 64), np.float32)
x2 = np.ones((3, 4, 64), np.float32)
""",
    "q = cx.load(\"dir\"": "",
    "cx.evaluate_task(": "",
    # The PyTorch module of the block's own recipe, exported to model.safetensors.
    "doc = cx.auto_stack_config(": """
import importlib.util
from cortex.config import CortexStackConfig
from cortex.stacks import CortexStack
spec = importlib.util.spec_from_file_location("cx_export", os.path.join(ROOT, "bindings/python/cortex_swift/export.py"))
cx_export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cx_export)
exec(RECIPE)
cx_export.export(CortexStack(CortexStackConfig(**doc["config"])).eval(), "exported")
os.rename("exported/model.safetensors", "model.safetensors")
""",
    "y, state = model.forward(x, route_ids=": """
model = cx.load(os.path.join(GOLDENS, "routed", "model"))
x = np.zeros((3, 4, 16), np.float32)
x_t = np.zeros((3, 16), np.float32)
""",
}

# What "# needs ..." asks for, and how to tell it is here.
NEEDS = {
    "torch": lambda: importlib.util.find_spec("torch") is not None and importlib.util.find_spec("cortex") is not None,
    "transformers": lambda: importlib.util.find_spec("transformers") is not None,
    "ray": lambda: importlib.util.find_spec("ray") is not None,
    "PostgreSQL": lambda: bool(os.environ.get("CORTEX_PG_URL")),
}


def blocks():
    text = open(README).read()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text[:m.start()].count("\n") + 1
        out.append(pytest.param(m.group(1), id=f"README.md:{line}"))
    return out


def first_code_line(code):
    return next(l for l in code.splitlines() if l.strip() and not l.startswith("#"))


@pytest.mark.parametrize("code", blocks())
def test_readme_block_runs_as_written(code, tmp_path):
    head = code.splitlines()[0]
    if head.startswith("# needs "):
        wanted = [w for w in NEEDS if w in head]
        missing = [w for w in wanted if not NEEDS[w]()]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}")
    key = next((k for k in INPUTS if first_code_line(code).startswith(k)), None)
    assert key is not None, f"a README block without inputs in test_readme.py: {first_code_line(code)!r}"
    for name, target in LINKS.items():
        os.symlink(target, tmp_path / name)
    # RECIPE: the block's statements before its first `model =` (the recipe blocks' own config).
    recipe = code.split("\nmodel =")[0]
    prelude = (f"import os\nROOT, GOLDENS = {ROOT!r}, {GOLDENS!r}\n" + COMMON + f"RECIPE = {recipe!r}\n" + INPUTS[key])
    r = subprocess.run([sys.executable, "-c", prelude + code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"


def test_readme_c_block_compiles_and_runs(tmp_path):
    """The C block is a whole program: compiled with the house warnings against the
    library this package loads, run where `examples/` exists."""
    from cortex_swift import _lib

    text = open(README).read()
    code = re.search(r"^```c\n(.*?)^```", text, re.S | re.M).group(1)
    (tmp_path / "snippet.c").write_text(code)
    os.symlink(LINKS["examples"], tmp_path / "examples")
    # The package's copy is named libcortex.so; programs ask for its SONAME.
    lib = tmp_path / "libcortex.so.1"
    os.symlink(_lib._library_path(), lib)
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", os.path.join(ROOT, "include"),
                    str(tmp_path / "snippet.c"), str(lib), "-Wl,-rpath," + str(tmp_path), "-o", str(tmp_path / "snippet")],
                   check=True)
    r = subprocess.run([str(tmp_path / "snippet")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("y[0] = "), r.stdout + r.stderr
