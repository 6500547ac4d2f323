"""cx.auto_stack_config: cortexcore's build_cortex_auto_config in Cortex, checked against
the configs cortexcore produced for the same recipes (Tests/goldens/auto_configs.json)."""
import json
import os

import numpy as np
import pytest

import cortex_swift as cx
from conftest import GOLDENS, Golden, assert_close

with open(os.path.join(GOLDENS, "auto_configs.json")) as f:
    AUTO = json.load(f)["cases"]


@pytest.mark.parametrize("case", AUTO, ids=[json.dumps(c["recipe"])[:60] for c in AUTO])
def test_recipe_gives_the_reference_config(case):
    doc = cx.auto_stack_config(case["recipe"])
    assert doc["architecture"] == "cortex_stack"
    assert doc["config"] == case["config"]
    assert _key_order(doc["config"]) == _key_order(case["config"]), "same fields in the same order"


def _key_order(x):
    """The structure's field names in order (values aside: Cortex writes 1.0 as 1)."""
    if isinstance(x, dict):
        return [(k, _key_order(v)) for k, v in x.items()]
    if isinstance(x, list):
        return [_key_order(v) for v in x]
    return None


def test_built_stack_loads_the_reference_weights():
    g = Golden("auto_axms")
    doc = cx.auto_stack_config(d_hidden=16, num_layers=2)  # the default: AXMS
    with cx.load_from_memory(doc, os.path.join(g.model_dir, "model.safetensors")) as m:
        y, _ = m.forward(g.t["seq/x"])
        assert_close(np.from_dlpack(y), g.t["seq/y"], "auto stack from a recipe")


def test_bad_recipes_raise_with_the_reason():
    with pytest.raises(cx.ParseError, match="unknown token at position 1"):
        cx.auto_stack_config(d_hidden=8, pattern="AZ")
    with pytest.raises(cx.ParseError, match="d_hidden"):
        cx.auto_stack_config(num_layers=2)
    with pytest.raises(cx.Unsupported, match="unknown cell type 'gru'"):
        cx.auto_stack_config(d_hidden=8, layers=[[{"block_type": "passthrough", "cell": {"cell_type": "gru"}}]])
