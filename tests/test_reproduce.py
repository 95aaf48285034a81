"""Smoke test of benchmarks/reproduction/reproduce.py: every kind of method runs end to end and the report is written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduction" / "reproduce.py"


def run_benchmark(monkeypatch, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses resolve their annotations through sys.modules.
    monkeypatch.setitem(sys.modules, "reproduce", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *argv])
    module.main()


@pytest.mark.slow
def test_reproduce_smoke(tmp_path, monkeypatch):
    pretrain = tmp_path / "pretrain"
    # 180 steps: a multiple of every method's rounds (6, curriculum M = 5, skill curriculum 36).
    run_benchmark(
        monkeypatch,
        "--quick",
        "--seeds", "1",
        "--eval-every", "30",
        "--batch", "8",
        "--methods", "random,curriculum,skill_anticurriculum,skill_it",
        "--output-dir", str(pretrain),
    )  # fmt: skip
    report = (pretrain / "summary.md").read_text()
    for row in ("| Random |", "| Curriculum |", "| Skill-anticurriculum |", "| Skill-It |", "Paper average"):
        assert row in report
    assert sorted(p.name for p in pretrain.glob("*.png")) == [
        "lego_pretrain_ablation.png",
        "lego_pretrain_accuracy.png",
        "lego_pretrain_loss.png",
        "lego_pretrain_skillit_weights.png",
    ]
    run = json.loads((pretrain / "runs" / "skill_it_seed0.json").read_text())
    assert [p["step"] for p in run["curve"]] == [0, 30, 60, 90, 120, 150, 180]
    assert len(run["trajectory"]) == 6

    finetune = tmp_path / "finetune"
    run_benchmark(
        monkeypatch,
        "--quick",
        "--seeds", "1",
        "--task", "addition",
        "--setting", "finetune",
        "--steps", "30",
        "--batch", "8",
        "--eval-every", "10",
        "--methods", "target_only,skill_it",
        "--threshold", "100",
        "--output-dir", str(finetune),
    )  # fmt: skip
    report = (finetune / "summary.md").read_text()
    # Every run is below a threshold of 100 from its first measurement, at step 0.
    assert "| Target skill only | 0 | 1/1 |" in report
    assert (finetune / "addition_finetune_target.png").is_file()


@pytest.mark.slow
def test_reproduce_fold_tables(tmp_path, monkeypatch):
    """The table fold (issue 11): steps-to-threshold per skill and for the average, paired by seed."""
    out = tmp_path / "fold"
    run_benchmark(
        monkeypatch,
        "--task", "fold", "--quick", "--seeds", "1", "--steps", "60", "--eval-every", "20", "--batch", "8",
        "--family", "gpt2", "--threshold", "100", "--eta", "2", "--window", "1",
        "--methods", "stratified,skill_it", "--output-dir", str(out),
    )  # fmt: skip
    report = (out / "summary.md").read_text()
    assert "Skill-It eta 2.0, window 1, 6 rounds" in report
    # Every loss is below 100 at the first recorded step (0): every cell is step 0, reached by the one run.
    assert "| Skill-It | 0 (1/1) | 0 (1/1) | 0 (1/1) | 0 (1/1) |" in report
    assert "| seed 0 | +0 | +0 | +0 | +0 |" in report
    runs = {p.name for p in (out / "runs").iterdir()}
    assert runs == {"skill_it_seed0.json", "stratified_seed0.json"}
