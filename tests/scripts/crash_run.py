"""A small SkillItTrainer run that SIGKILLs itself at a chosen point, for tests/reliability/.

    python crash_run.py ROOT --kill POINT:N [--kill POINT:N ...]
    torchrun --nproc_per_node 2 crash_run.py OUTPUT_DIR --rows FILE --kill POINT:N --rank R [--ddp-timeout S]

Without torchrun, one interpreter forks one process per kill point, training in `ROOT/<point>-<N>`, its rows in
`ROOT/<point>-<N>.rows.jsonl` and how it ended in `ROOT/<point>-<N>.status`. Under torchrun only rank `--rank`
faults. Kill points (N counts from 1):

- `forward:N`: during the N-th training forward pass (mid-step: a step has 2 micro-batches).
- `eval:N`: inside the round-N boundary evaluation (a `SkillEvaluator` kills its own process).
- `save:N`: while checkpoint-N is written: after `skillit_state.json`, the weights, the optimizer and the RNG
  state, before `trainer_state.json`.
- `save_partial:N`: the same, with half of `trainer_state.json` on disk.
- `trajectory:N`: halfway through appending round N's line to `skillit_trajectory.jsonl`.

With CRASH_HANG=1 the process hangs instead of dying; with CRASH_STAMP=FILE it writes the fault's time there first.
Every training micro-batch's row ids are appended to the rows file (one JSON list per line, flushed at once) so
that the data order can be compared with an uninterrupted run's. The test imports `build_trainer` to run the
uninterrupted and the resumed runs in its own process.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import json
import os
import sys
from typing import Any

import numpy as np
import torch
from transformers import TrainerState

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from conftest import (  # noqa: E402
    RecordingCollator,
    checkpointed_settings,
    die,
    kill_in_forward,
    lego_skills,
    run_forked,
    skillit_config,
    tiny_config,
)

import hf_skillit.rundir as rundir_module  # noqa: E402
from hf_skillit import SkillItTrainer, SkillsGraph  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_tiny_model  # noqa: E402

SKILLS = ("1", "2", "3")
ROUNDS, MAX_STEPS, SAVE_STEPS = 4, 16, 3
KILL_POINTS = ("forward", "eval", "save", "save_partial", "trajectory")
GRAPH = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.5, 1.0]])


class Probe:
    """A `SkillEvaluator` with a constant score that can kill its process inside one round-boundary evaluation."""

    skills = ("probe",)

    def __init__(self, kill_round: int | None = None):
        self.kill_round = kill_round

    def __call__(self, trainer: SkillItTrainer) -> dict[str, float]:
        if trainer.state.global_step // trainer.args.steps_per_round == self.kill_round:
            die()
        return {"probe": 0.0}


def kill_in_save(step: int, partial: bool) -> None:
    # The Trainer writes trainer_state.json last in `_save_checkpoint`, after every other file of the checkpoint.
    save_to_json = TrainerState.save_to_json

    def save(self, json_path: str) -> None:
        if os.path.basename(os.path.dirname(json_path)) != f"checkpoint-{step}":
            return save_to_json(self, json_path)
        if partial:
            text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
            with open(json_path, "w") as f:
                f.write(text[: len(text) // 2])
                f.flush()
                os.fsync(f.fileno())
        die()

    TrainerState.save_to_json = save


def kill_in_trajectory_append(round_index: int) -> None:
    appends = 0

    class HalfWrite:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text: str) -> int:
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            die()

    def open_(file, mode="r", *args, **kwargs):
        nonlocal appends
        f = builtins.open(file, mode, *args, **kwargs)
        if str(file).endswith(rundir_module.TRAJECTORY_NAME) and mode == "a":
            appends += 1
            if appends == round_index:
                return HalfWrite(f)
        return f

    # Module globals shadow builtins: only the run-directory module's `open` (which appends rounds) is replaced.
    rundir_module.open = open_


def build_trainer(
    output_dir: str,
    rows_path: str,
    kill: str | None = None,
    ddp_timeout: int = 1800,
    **overrides: Any,
) -> SkillItTrainer:
    """The run under test: Skill-It over 3 LEGO skills, 4 rounds of 4 steps, a checkpoint every 3 steps."""
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    skills = lego_skills(tokenizer, {s: 60 for s in SKILLS}, validation=8)
    model = make_tiny_model(tiny_config(tokenizer), seed=0)
    args = dict(
        **checkpointed_settings(ROUNDS, MAX_STEPS, SAVE_STEPS),
        remove_unused_columns=False,
        # gloo and the timeout only matter under torchrun (transformers sets up gloo at once when asked for it).
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        ddp_timeout=ddp_timeout,
    )
    args.update(overrides)
    point, _, n = (kill or "").partition(":")
    if point == "forward":
        kill_in_forward(model, int(n))
    elif point in ("save", "save_partial"):
        kill_in_save(int(n), partial=point == "save_partial")
    elif point == "trajectory":
        kill_in_trajectory_append(int(n))
    elif point and point != "eval":
        raise ValueError(f"unknown kill point {kill!r}; one of {', '.join(KILL_POINTS)}")
    return SkillItTrainer(
        model=model,
        args=skillit_config(output_dir, **args),
        skills=skills,
        graph=SkillsGraph(GRAPH, list(SKILLS)),
        evaluators=[Probe(int(n) if point == "eval" else None)],
        data_collator=RecordingCollator(tokenizer.pad_token_id, rows_path),
        processing_class=tokenizer,
    )


def run_killed(root: str, kill: str) -> None:
    """Train in a forked child that kills itself at `kill`; record how the child ended in `root/<kill>.status`."""
    name = kill.replace(":", "-")
    run_forked(
        root,
        name,
        lambda: build_trainer(os.path.join(root, name), os.path.join(root, f"{name}.rows.jsonl"), kill=kill).train(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="the run's output_dir; the root of one directory per kill without torchrun")
    parser.add_argument("--rows", help="under torchrun: the rows file ({rank} is replaced by the rank)")
    parser.add_argument("--kill", action="append", default=[], help="POINT:N, POINT one of " + ", ".join(KILL_POINTS))
    parser.add_argument("--rank", type=int, default=0, help="under torchrun: the rank that kills itself")
    parser.add_argument("--ddp-timeout", type=int, default=1800)
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        # One import for all kill points: each is trained in its own forked process.
        os.makedirs(args.output_dir, exist_ok=True)
        for kill in args.kill:
            run_killed(args.output_dir, kill)
        return
    rank = int(os.environ["RANK"])
    trainer = build_trainer(
        args.output_dir,
        args.rows.replace("{rank}", str(rank)),
        kill=args.kill[0] if args.kill and rank == args.rank else None,
        ddp_timeout=args.ddp_timeout,
    )
    trainer.train()


if __name__ == "__main__":
    main()
