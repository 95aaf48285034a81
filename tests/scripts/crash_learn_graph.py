"""`learn_graph` runs that SIGKILL themselves, for tests/reliability/.

    python crash_learn_graph.py ROOT KILL [KILL ...]

Each kill point is trained in its own forked process (one import for all), in `ROOT/<kill>`:

- `train:K`: during the K-th run's training, after its first evaluation round.
- `run_file:K`: after the K-th run's result is written to its temporary file, before it is renamed into `runs/`.
- `graph`: the whole learn_graph finishes (graph.json written); then `merge_runs` with another edge rule is killed
  after writing its new graph to a temporary file, before renaming it onto graph.json.

How each process ended goes to `ROOT/<kill>.status`. The test imports `learn` to resume in its own process.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from conftest import lego_skills, run_forked, tiny_config  # noqa: E402

from hf_skillit import SkillsGraph  # noqa: E402
from hf_skillit.graph_learning import learn_graph, merge_runs  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402

TOKENIZER = build_tokenizer()
STEPS, EVAL_EVERY = 4, 2  # two evaluation rounds per run
ARGS = {
    "learning_rate": 1e-2,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "use_cpu": True,
    "report_to": "none",
    "disable_tqdm": True,
    "logging_steps": 1000,
    "seed": 0,
}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class CountingInit:
    """A fresh tiny model per call, counting the calls (= runs trained)."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return make_tiny_model(tiny_config(TOKENIZER), seed=0)


class KillInRun:
    """A `SkillEvaluator` (constant score) that kills its process after the first round of the K-th run."""

    skills = ("probe",)

    def __init__(self, run: int | None = None):
        self.run = run
        self.calls = 0

    def __call__(self, trainer: Any) -> dict[str, float]:
        self.calls += 1
        # Each run calls it once before training and once per round.
        if self.run is not None and self.calls == (self.run - 1) * (STEPS // EVAL_EVERY + 1) + 2:
            die()
        return {"probe": 0.0}


def kill_when_replacing(name: str, nth: int = 1) -> None:
    """Kill the process at the `nth` atomic rename onto a file called `name` (the write before it is complete)."""
    replace, seen = os.replace, 0

    def replace_(src, dst, *args, **kwargs):
        nonlocal seen
        if os.path.basename(dst) == name or (name == "runs/*" and os.path.basename(os.path.dirname(dst)) == "runs"):
            seen += 1
            if seen == nth:
                die()
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_


def learn(output_dir: str, model_init=None, kill_run: int | None = None) -> SkillsGraph | None:
    """Brute force over two LEGO skills: runs single-0, single-1 and pair-0-1, `STEPS` steps each."""
    skills = lego_skills(TOKENIZER, {"1": 40, "2": 40}, validation=8)
    return learn_graph(
        skills=skills,
        model_init=model_init or CountingInit(),
        output_dir=output_dir,
        steps=STEPS,
        eval_every=EVAL_EVERY,
        edge_rule="delta",
        args=ARGS,
        processing_class=TOKENIZER,
        evaluators=[KillInRun(kill_run)],
        model_description="tiny",
    )


def killed(output_dir: str, kill: str) -> None:
    point, _, k = kill.partition(":")
    if point == "train":
        learn(output_dir, kill_run=int(k))
    elif point == "run_file":
        kill_when_replacing("runs/*", int(k))
        learn(output_dir)
    elif point == "graph":
        learn(output_dir)
        kill_when_replacing("graph.json")
        merge_runs(output_dir, edge_rule="positive")
    else:
        raise ValueError(f"unknown kill point {kill!r}")


def main() -> None:
    root, kills = sys.argv[1], sys.argv[2:]
    os.makedirs(root, exist_ok=True)
    for kill in kills:
        name = kill.replace(":", "-")
        run_forked(root, name, functools.partial(killed, os.path.join(root, name), kill))


if __name__ == "__main__":
    main()
