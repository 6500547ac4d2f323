"""A trained memory model solving a memory task, step by step.

The model (examples/models/tasks/delayed_recall, trained with cortexcore by
scripts/train_tasks.py) sees a cue bit, then 50 filler tokens, and must say which cue it
saw. Cortex runs it one token per step with the state carried between calls, reads the
answer after the last step, and compares with the accuracy PyTorch measured.

    .venv/bin/python examples/python/delayed_recall.py [model_dir]
"""
import json
import os
import sys

import numpy as np

import cortex_swift as cx

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
task_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "examples", "models", "tasks", "delayed_recall")
with open(os.path.join(task_dir, "task.json")) as f:
    task = json.load(f)
if task["task"] != "delayed_recall":
    # The step-by-step demo below is the delayed-recall task's; any task scores alike.
    report = cx.evaluate_task(task_dir)
    print(f"{task['task']}: test set accuracy Cortex {report['accuracy']:.3f}, PyTorch {report['pytorch_accuracy']:.3f} "
          f"({report['samples']} sequences, max logit difference {report['max_logit_error']:.1e})")
    sys.exit(0 if report["accuracy"] == report["pytorch_accuracy"] else "Cortex and PyTorch disagree")
delay = task["parameters"]["delay"]

# The stack is an ordinary Cortex model; the embedding and the classifier head are two
# small matrices beside it (cortexcore's SequenceClassifier layout).
model = cx.load(os.path.join(task_dir, "model"))
head = {}
with open(os.path.join(task_dir, "head.safetensors"), "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    meta = json.loads(f.read(n))
    data = f.read()
for name, d in meta.items():
    if name != "__metadata__":
        b, e = d["data_offsets"]
        head[name] = np.frombuffer(data[b:e], dtype=np.float32).reshape(d["shape"])
embed, w, bias = head["embed.weight"], head["classifier.weight"], head["classifier.bias"]

cues = np.array([0, 1, 1, 0, 1, 0, 0, 1])
state = model.init_state(batch=len(cues))
for t in range(delay + 1):  # one token per step: the cue, then fillers (token 2)
    tokens = cues if t == 0 else np.full(len(cues), 2)
    y, state = model.step(embed[tokens], state)
answers = (np.from_dlpack(y) @ w.T + bias).argmax(-1)
print(f"cues    {cues.tolist()}")
print(f"answers {answers.tolist()}  (after {delay} filler steps, one cx_model_step per token)")

report = cx.evaluate_task(task_dir)  # the exported test set, in sequence mode
fresh = cx.evaluate_task(task_dir, source="generated", samples=1000, seed=1)
print(f"test set: Cortex {report['accuracy']:.3f}, PyTorch {report['pytorch_accuracy']:.3f} "
      f"({report['samples']} sequences, max logit difference {report['max_logit_error']:.1e}); "
      f"1000 fresh sequences: {fresh['accuracy']:.3f}")
if not (answers == cues).all() or report["accuracy"] != report["pytorch_accuracy"]:
    sys.exit("the trained model did not recall its cues as expected")
