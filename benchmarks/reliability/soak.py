"""Soak: a long run with many rounds and checkpoints, SIGKILLed at seeded points, against an uninterrupted run.

    python benchmarks/reliability/soak.py [--rounds 200] [--steps-per-round 5] [--save-steps 7] [--kills 3] [--seed 0]

The run is `tests/scripts/crash_run.py`'s (Skill-It over 3 LEGO skills, tiny GPT-NeoX, 2 micro-batches per
step, a checkpoint every `--save-steps` steps, `save_total_limit=2`), made `rounds x steps_per_round` steps
long. The killed run is trained in forked processes, each resuming from the newest complete checkpoint
(`train(resume_from_checkpoint=True)`), until one finishes. Each kill is drawn from `--seed`: a global step
spread over the run and a kind of fault, all SIGKILL of the training process:

- `forward`: inside that step's first training forward;
- `save`: while the first checkpoint at or after that step is written (after the weights, optimizer and RNG
  state, before `trainer_state.json`: a half-written checkpoint that resuming must skip);
- `trajectory`: halfway through appending the line of the round containing that step;
- `eval`: inside that round's boundary evaluation.

Checked, and printed as a table: the trajectory (p, per-skill sample counts, per-skill losses of every
round) and the final weights equal the uninterrupted run's; disk use (bytes of `output_dir` and number of
checkpoints, measured after every save) stays bounded; the time per round of the uninterrupted run does not
grow with the round index (least-squares slope, seconds per round per round, and its 95% interval).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import safetensors.torch
from scipy import stats
from transformers import TrainerCallback
from transformers.utils import logging as transformers_logging

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "scripts"))
import crash_run  # noqa: E402

from hf_skillit.rundir import TRAJECTORY_NAME, last_complete_checkpoint  # noqa: E402

KINDS = ("forward", "save", "trajectory", "eval")


class DiskProbe(TrainerCallback):
    """After every save: bytes under `output_dir` and how many checkpoints it holds, appended to a JSONL file."""

    def __init__(self, path: str):
        self.path = path

    def on_save(self, args, state, control, **kwargs):
        total, checkpoints = 0, 0
        for root, _, files in os.walk(args.output_dir):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        checkpoints = sum(name.startswith("checkpoint-") for name in os.listdir(args.output_dir))
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": state.global_step, "bytes": total, "checkpoints": checkpoints}) + "\n")


class RoundTimer(TrainerCallback):
    """Wall time of every round (from the previous boundary to the end of this one's last step)."""

    def __init__(self, steps_per_round: int):
        self.steps_per_round = steps_per_round
        self.seconds: list[float] = []
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        # Runs before the round-end update (a callback added later), so the boundary evaluation lands in the
        # next round's time: every round pays one evaluation alike.
        if state.global_step % self.steps_per_round == 0:
            now = time.perf_counter()
            self.seconds.append(now - self._last)
            self._last = now


def plan_kills(seed: int, kills: int, max_steps: int, steps_per_round: int, save_steps: int) -> list[tuple[str, int]]:
    """`kills` (kind, global step) pairs, one in each equal part of the run (kinds drawn without repeats first)."""
    rng = np.random.default_rng(seed)
    bounds = np.linspace(1, max_steps, kills + 1).astype(int)
    kinds = list(rng.permutation(KINDS))
    plan = []
    for i in range(kills):
        step = int(rng.integers(bounds[i], bounds[i + 1]))
        kind = str(kinds[i % len(kinds)])
        if kind == "save":
            step = -(-step // save_steps) * save_steps
        plan.append((kind, min(step, max_steps - 1)))
    return plan


def kill_spec(kind: str, step: int, start_step: int, steps_per_round: int, accumulation: int) -> str:
    """The `crash_run` kill point that fires at global `step` in a process resumed at `start_step`."""
    if kind == "forward":  # counts this process's training forwards, `accumulation` a step
        return f"forward:{(step - start_step - 1) * accumulation + 1}"
    if kind == "save":
        return f"save:{step}"
    round_index = -(-step // steps_per_round)  # 1-based round containing `step`
    if kind == "trajectory":  # counts this process's appends
        return f"trajectory:{round_index - start_step // steps_per_round}"
    return f"eval:{round_index}"


def newest_complete_step(output_dir: str) -> int:
    path = last_complete_checkpoint(output_dir)
    return int(path.rsplit("-", 1)[1]) if path else 0


def run_segment(output_dir: str, kill: str | None, resume: bool, overrides: dict, probe: str) -> dict:
    """Train in a forked child (SIGKILLed at `kill`); how it ended."""
    pid = os.fork()
    if pid == 0:
        try:
            trainer = crash_run.build_trainer(
                output_dir, os.path.join(output_dir, "..", "rows.jsonl"), kill, **overrides
            )
            trainer.add_callback(DiskProbe(probe))
            trainer.train(resume_from_checkpoint=True if resume else None)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit_code": os.WEXITSTATUS(status)}


def trajectory(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, TRAJECTORY_NAME)) as f:
        return [json.loads(line) for line in f]


def final_weights(output_dir: str, step: int) -> dict:
    return safetensors.torch.load_file(os.path.join(output_dir, f"checkpoint-{step}", "model.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--save-steps", type=int, default=7)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="kept for inspection (default: a temporary directory)")
    opts = parser.parse_args()
    transformers_logging.disable_progress_bar()
    max_steps = opts.rounds * opts.steps_per_round
    overrides = dict(
        rounds=opts.rounds, max_steps=max_steps, save_steps=opts.save_steps, save_total_limit=2, logging_steps=10**6
    )
    accumulation = 2  # crash_run's gradient_accumulation_steps
    root = opts.output_dir or tempfile.mkdtemp(prefix="skillit-soak-")
    killed_dir, whole_dir = os.path.join(root, "killed", "run"), os.path.join(root, "whole", "run")
    os.makedirs(killed_dir, exist_ok=True)
    os.makedirs(whole_dir, exist_ok=True)

    # The killed run first: forking before this process has trained anything (no torch threads yet).
    plan = plan_kills(opts.seed, opts.kills, max_steps, opts.steps_per_round, opts.save_steps)
    segments, start = [], time.perf_counter()
    for kind, step in [*plan, (None, None)]:
        begin = newest_complete_step(killed_dir)
        if kind is not None and step <= begin:
            raise RuntimeError(f"kill at step {step} comes before the resume point {begin}: use fewer kills")
        spec = None if kind is None else kill_spec(kind, step, begin, opts.steps_per_round, accumulation)
        ended = run_segment(
            killed_dir, spec, resume=begin > 0, overrides=overrides, probe=os.path.join(root, "disk_killed.jsonl")
        )
        segments.append({"resumed_at": begin, "kill": spec, "at_step": step, **ended})
        if kind is not None and ended.get("signal") != 9:
            raise RuntimeError(f"kill {spec} (step {step}) did not fire: {ended}")
    killed_seconds = time.perf_counter() - start
    if segments[-1].get("exit_code") != 0:
        raise RuntimeError(f"the last resumed segment did not finish: {segments[-1]}")

    trainer = crash_run.build_trainer(whole_dir, os.path.join(root, "whole", "rows.jsonl"), None, **overrides)
    timer = RoundTimer(opts.steps_per_round)
    trainer.add_callback(timer)
    trainer.add_callback(DiskProbe(os.path.join(root, "disk_whole.jsonl")))
    start = time.perf_counter()
    trainer.train()
    whole_seconds = time.perf_counter() - start

    a, b = trajectory(whole_dir), trajectory(killed_dir)
    same_rounds = [r["round"] for r in a] == [r["round"] for r in b] == list(range(1, opts.rounds + 1))
    same_samples = all(x["samples"] == y["samples"] for x, y in zip(a, b, strict=True))
    p_diff = max(abs(x["p"][s] - y["p"][s]) for x, y in zip(a, b, strict=True) for s in x["p"])
    loss_diff = max(
        abs(x["eval_loss"][s] - y["eval_loss"][s]) for x, y in zip(a, b, strict=True) for s in x["eval_loss"]
    )
    wa, wb = final_weights(whole_dir, max_steps), final_weights(killed_dir, max_steps)
    weights_equal = wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    disk = [
        json.loads(line)
        for name in ("disk_whole", "disk_killed")
        for line in open(os.path.join(root, f"{name}.jsonl"))
    ]
    seconds = np.asarray(timer.seconds[1:])  # round 1 also pays the start of training
    fit = stats.linregress(np.arange(2, len(seconds) + 2), seconds)
    half = stats.t.ppf(0.975, len(seconds) - 2) * fit.stderr

    print(
        f"soak: {opts.rounds} rounds x {opts.steps_per_round} steps, checkpoint every {opts.save_steps} steps, "
        f"save_total_limit=2, seed {opts.seed}"
    )
    for s in segments:
        print(
            f"  segment resumed at step {s['resumed_at']:>4}: kill {s['kill'] or '-':<14} (step {s['at_step']}) -> "
            + ("SIGKILL" if s.get("signal") == 9 else f"exit {s.get('exit_code')}")
        )
    print(
        f"trajectory equal: rounds {same_rounds}, samples {same_samples}, max |dp| {p_diff:.3g}, "
        f"max |dloss| {loss_diff:.3g}; final weights bit-identical: {weights_equal}"
    )
    print(
        f"disk: max {max(d['bytes'] for d in disk) / 1e6:.2f} MB, max {max(d['checkpoints'] for d in disk)} "
        f"checkpoints over {len(disk)} saves (last {disk[-1]['bytes'] / 1e6:.2f} MB)"
    )
    print(
        f"time per round (uninterrupted, rounds 2-{opts.rounds}): mean {seconds.mean() * 1e3:.1f} ms, slope "
        f"{fit.slope * 1e3:.4f} ms/round (95% CI {(fit.slope - half) * 1e3:.4f} to {(fit.slope + half) * 1e3:.4f}); "
        f"first 20 rounds {seconds[:20].mean() * 1e3:.1f} ms, last 20 {seconds[-20:].mean() * 1e3:.1f} ms"
    )
    print(f"wall: uninterrupted {whole_seconds:.0f} s, killed + resumed {killed_seconds:.0f} s")
    ok = same_rounds and same_samples and p_diff == 0 and loss_diff == 0 and weights_equal
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
