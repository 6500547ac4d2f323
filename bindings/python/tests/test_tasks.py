"""The committed trained task models (scripts/train_tasks.py) score in Cortex exactly as
they did in PyTorch, through cx.evaluate_task (the C ABI's cx_task_evaluate)."""
import os

import pytest

import cortex_swift as cx
from conftest import ROOT

TASKS = ["delayed_recall", "majority", "dyck"]


@pytest.mark.parametrize("task", TASKS)
def test_task_model_matches_pytorch(task):
    d = os.path.join(ROOT, "examples", "models", "tasks", task)
    r = cx.evaluate_task(d)
    print(f"[task] {task}: Cortex {r['accuracy']}, PyTorch {r['pytorch_accuracy']}, max logit error {r['max_logit_error']:.2e}")
    assert r["task"] == task and r["source"] == "testset"
    assert r["accuracy"] == r["pytorch_accuracy"]
    assert r["max_logit_error"] <= 1e-4
    g = cx.evaluate_task(d, source="generated", samples=300, seed=5)
    assert g["samples"] == 300 and g["accuracy"] >= 0.95


def test_bad_task_directory_raises(tmp_path):
    with pytest.raises(cx.CortexIOError):
        cx.evaluate_task(tmp_path / "nothing")
    with pytest.raises(cx.ParseError, match="source"):
        cx.evaluate_task(os.path.join(ROOT, "examples", "models", "tasks", "dyck"), source="web")
