"""Shared fixtures and helpers: a local word-level tokenizer, tiny models built from config, small configs and skill
sets, test callbacks, and launching the scripts of tests/scripts (forked, or as two ranks under torchrun). The
scripts import the helpers from here too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_skillit import LMCollator, SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config  # noqa: E402

# Tiny models run faster on one thread than on two contending ones, and results do not depend on the CPU count.
torch.set_num_threads(1)
datasets.disable_progress_bars()

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
"""The environment of the scripts the tests launch: one thread per process, no hub."""


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def skillit_config(output_dir, config_class: type[SkillItConfig] = SkillItConfig, **overrides) -> SkillItConfig:
    """A small CPU `SkillItConfig` (or `config_class`, e.g. `SkillItSFTConfig`) writing into `output_dir`: batches
    of 8 (validation: 16), lr 3e-3, seed 0, no checkpoints, no logging, no progress bars; `overrides` are any
    arguments of the config class. For scripts outside pytest and runs in a folder of their own; a test whose run
    writes into its `tmp_path` uses the `make_config` fixture."""
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1000,
        seed=0,
    )
    args.update(overrides)
    return config_class(**args)


def skillit_trainer(
    output_dir, tokenizer, model, skills: SkillSet, graph: SkillsGraph | None = None, callbacks=(), **overrides
) -> SkillItTrainer:
    """A `SkillItTrainer` of `model` on `skills` (and `graph`) with `skillit_config(output_dir, **overrides)`, the
    tokenizer as its processing class and `callbacks`: the runs a test stops, resumes and compares."""
    args = skillit_config(output_dir, **overrides)
    return SkillItTrainer(
        model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer, callbacks=list(callbacks)
    )


@pytest.fixture
def make_config(tmp_path):
    """`make_config(**overrides)`: `skillit_config` writing into the test's `tmp_path`."""

    def make(**overrides) -> SkillItConfig:
        return skillit_config(tmp_path, **overrides)

    return make


def tiny_config(tokenizer, **overrides):
    """The tests' tiny GPT-NeoX: hidden size 32, 1 layer, 2 heads, 64 positions; `overrides` are any
    `tiny_model_config` arguments."""
    sizes = dict(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=64)
    return tiny_model_config(tokenizer=tokenizer, **{**sizes, **overrides})


@pytest.fixture
def tiny_model(tokenizer):
    def make(seed: int = 0, **overrides):
        return make_tiny_model(tiny_config(tokenizer, **overrides), seed=seed)

    return make


def lego_skills(tokenizer, sizes: dict[str, int], validation: int = 16, seed: int = 0) -> SkillSet:
    """LEGO (k = 3) skills with the given numbers of training rows, each row carrying a unique `id`."""
    total = sum(sizes.values()) + validation * len(sizes)
    data = encode(make_lego(total * 3 + 300, k=3, seed=seed), tokenizer)
    data = data.add_column("id", list(range(len(data))))
    by_skill = {name: data.filter(lambda s, name=name: s == name, input_columns="skill") for name in sizes}
    train = {name: by_skill[name].select(range(n)) for name, n in sizes.items()}
    held_out = {name: by_skill[name].select(range(sizes[name], sizes[name] + validation)) for name in sizes}
    return SkillSet(train, held_out)


@pytest.fixture
def skills(tokenizer):
    return lego_skills(tokenizer, {"1": 200, "2": 200, "3": 200})


def softmax_of(*exponents):
    """Normalised np.exp of hand-computed exponents."""
    weights = np.exp(np.array(exponents, dtype=np.float64))
    return weights / weights.sum()


@pytest.fixture
def graph_2x2():
    # a helps a (1) and b (0.5); b helps only itself.
    return SkillsGraph([[1.0, 0.5], [0.0, 1.0]], ["a", "b"])


# ----- callbacks and collators ------------------------------------------------------------------------------------


class StopAt(TrainerCallback):
    """A crash stand-in: stop right after step `step` (and the checkpoint that step may write)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class RecordLogs(TrainerCallback):
    """Every log entry that holds Skill-It metrics (`skillit/...`), with its step."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and any(k.startswith("skillit/") for k in logs):
            self.logs.append({"step": state.global_step, **logs})


class RecordingCollator(LMCollator):
    """Appends `[record(row) for row in batch]` of every training batch to `rows_path` as one JSON line, at once, so
    the rows batched before a kill are on disk. `record` defaults to the row's `id`."""

    def __init__(self, pad_token_id: int, rows_path: str, record: Callable[[dict], Any] = lambda row: int(row["id"])):
        super().__init__(pad_token_id)
        self.rows_path = rows_path
        self.record = record

    def __call__(self, features):
        # Validation rows carry model columns only; training rows keep `id` (remove_unused_columns=False).
        if features and "id" in features[0]:
            with open(self.rows_path, "a") as f:
                f.write(json.dumps([self.record(row) for row in features]) + "\n")
        return super().__call__(features)


# ----- the kill-and-resume scripts ---------------------------------------------------------------------------------


def checkpointed_settings(rounds: int, max_steps: int, save_steps: int) -> dict[str, Any]:
    """The settings of the runs that tests/scripts kill and resume: Skill-It in `rounds` rounds, optimizer steps of
    two accumulated micro-batches of 4 (so a kill can land mid-step), validation batches of 8, and a checkpoint every
    `save_steps` steps."""
    return dict(
        mixing="skill_it",
        rounds=rounds,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        per_device_eval_batch_size=8,
        save_strategy="steps",
        save_steps=save_steps,
    )


def die() -> None:
    """SIGKILL this process, as `kill -9` would (no exception, no cleanup), or with CRASH_HANG=1 hang forever.

    With CRASH_STAMP=FILE, the time of the fault is written to FILE first.
    """
    if stamp := os.environ.get("CRASH_STAMP"):
        with open(f"{stamp}.tmp", "w") as f:
            f.write(repr(time.time()))
        os.replace(f"{stamp}.tmp", stamp)  # the test polls for it
    while os.environ.get("CRASH_HANG"):
        time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_forward(model: torch.nn.Module, n: int) -> None:
    """`die` during the `n`-th training forward pass of `model` (validation forwards do not count)."""
    calls = 0

    def hook(module, args, kwargs):
        nonlocal calls
        if module.training:  # validation forwards do not count
            calls += 1
            if calls == n:
                die()

    model.register_forward_pre_hook(hook, with_kwargs=True)


# ----- the two-rank scripts (ddp_run, fsdp_run) -------------------------------------------------------------------


def two_rank_settings(rounds: int, max_steps: int) -> dict[str, Any]:
    """The SkillItConfig settings every two-rank script shares: Skill-It over gloo, batches of 4 per process and
    validation batches of 3 (which two ranks cannot split evenly)."""
    return dict(
        mixing="skill_it",
        rounds=rounds,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=3,
        ddp_backend="gloo",
    )


def two_rank_run(tokenizer, rounds: int, max_steps: int) -> tuple[SkillSet, SkillsGraph, dict[str, Any]]:
    """What the torchrun scripts train, and the settings they share: 3 LEGO skills of 120 training rows and 13
    validation rows (which two ranks cannot split evenly), a graph where skill 1 helps 2 and 3 and 2 helps 3, and
    Skill-It over gloo with batches of 4 per process and validation batches of 3."""
    skills = lego_skills(tokenizer, {s: 120 for s in ("1", "2", "3")}, validation=13)
    graph = SkillsGraph(np.array([[1.0, 0.5, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]]), ["1", "2", "3"])
    return skills, graph, two_rank_settings(rounds, max_steps)


def varied_length_run(
    tokenizer, streaming: bool, rounds: int, max_steps: int
) -> tuple[SkillSet, SkillsGraph, dict[str, Any]]:
    """Like `two_rank_run`, on rows of different lengths, as real text has: skill "count" (runs of consecutive
    token ids, learnable) and skill "noise" (uniform random ids), 200 rows each of 4 to 30 tokens, 13 of them held
    out for validation (`SkillSet.from_dict`); `streaming=True` gives the training rows as `IterableDataset`s
    (validation: each stream's first 13 rows). The graph says "count" helps "noise"."""
    rng = np.random.default_rng(7)
    low, high = len(tokenizer.all_special_ids), len(tokenizer)  # the word ids
    lengths = {name: rng.integers(4, 31, size=200) for name in ("count", "noise")}
    rows = {
        "count": [(rng.integers(low, high) + np.arange(n)) % (high - low) + low for n in lengths["count"]],
        "noise": [rng.integers(low, high, size=n) for n in lengths["noise"]],
    }
    train = {name: datasets.Dataset.from_dict({"input_ids": [r.tolist() for r in ids]}) for name, ids in rows.items()}
    if streaming:
        train = {name: data.to_iterable_dataset(num_shards=2) for name, data in train.items()}
    skills = SkillSet.from_dict(train, validation=13)
    graph = SkillsGraph(np.array([[1.0, 0.5], [0.0, 1.0]]), ["count", "noise"])
    return skills, graph, two_rank_settings(rounds, max_steps)


# ----- launching the scripts --------------------------------------------------------------------------------------


def run_forked(root: str, name: str, work: Callable[[], None]) -> None:
    """Run `work` in a forked child and write how the child ended (`{"signal": N}` or `{"exit_code": N}`) to
    `root/<name>.status`. A child whose `work` returns or raises exits with 0: its kill point was never hit."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)  # only reached when the kill point was never hit
    _, status = os.waitpid(pid, 0)
    ended = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit_code": os.WEXITSTATUS(status)}
    with open(os.path.join(root, f"{name}.status"), "w") as f:
        json.dump(ended, f)


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int = 2) -> list[str]:
    """`python -m torch.distributed.run` starting `nproc` processes, its rendezvous on a free port."""
    port = str(free_port())
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", port]


def finish_rank(trainer, output_dir: str | os.PathLike, result: dict) -> None:
    """The end of a rank's script under `run_two_ranks`: write `output_dir/rank<r>.json`, then leave together and
    tear the process group down. A rank that exits with gloo's threads still running can abort ("terminate called
    without an active exception") and fail an otherwise finished run."""
    with open(Path(output_dir) / f"rank{trainer.accelerator.process_index}.json", "w") as f:
        json.dump(result, f)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


def run_two_ranks(
    script: str | os.PathLike, *args: str, output_dir: str | os.PathLike, timeout: float = 240
) -> list[dict]:
    """Run `script args` as two CPU ranks under torchrun; fail the test with the end of its stderr unless it
    succeeds; return what each rank wrote to `output_dir/rank<r>.json`."""
    command = [*torchrun_command(2), str(script), *args]
    done = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((Path(output_dir) / f"rank{r}.json").read_text()) for r in range(2)]
