"""What the reliability tests share: the fault scripts of tests/scripts, crash_run's uninterrupted reference run,
and small configs and skills."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SUBPROCESS_ENV as ENV
from conftest import lego_skills, skillit_config

from hf_skillit import SkillItConfig, SkillSet

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SKILLS = ["1", "2", "3"]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crash_run = _load_script("crash_run")
crash_learn_graph = _load_script("crash_learn_graph")
STEPS_PER_ROUND = crash_run.MAX_STEPS // crash_run.ROUNDS
ACCUMULATION = 2  # crash_run's gradient_accumulation_steps: a row file line is one micro-batch


def read_jsonl(path: str | os.PathLike) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_scripts(*command: str, timeout: float = 300) -> None:
    done = subprocess.run([sys.executable, *command], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def crash_run_reference(root: Path) -> dict[str, Any]:
    """crash_run's run, uninterrupted, in this process: its directory, trajectory and row ids per micro-batch."""
    trainer = crash_run.build_trainer(str(root / "run"), str(root / "rows.jsonl"))
    trainer.train()
    return {"dir": root / "run", "trajectory": trainer.trajectory, "rows": read_jsonl(root / "rows.jsonl")}


def small_config(output_dir: Path, **overrides) -> SkillItConfig:
    """6 steps in 3 rounds of batches of 4 (validation batches of 8)."""
    small = dict(max_steps=6, rounds=3, per_device_train_batch_size=4, per_device_eval_batch_size=8)
    return skillit_config(output_dir, **{**small, **overrides})


def small_lego_skills(tokenizer) -> SkillSet:
    return lego_skills(tokenizer, {s: 30 for s in SKILLS}, validation=4)


def reference_fixture():
    """A module-scoped `reference` fixture (each test module that needs crash_run's reference run defines it)."""

    @pytest.fixture(scope="module")
    def reference(tmp_path_factory) -> dict[str, Any]:
        return crash_run_reference(tmp_path_factory.mktemp("reference"))

    return reference
