"""The end-of-run summary explains itself: chance levels, the skills that moved most, the reference comparison."""

from __future__ import annotations

import json
import math

import datasets
import pytest

from hf_skillit.cli import main
from hf_skillit.recipes import RecipeError, load_recipe
from hf_skillit.recipes.report import (
    chance_levels,
    explain_summary,
    format_summary,
    read_reference,
    reference_record,
    trajectory_budget,
)
from hf_skillit.rundir import read_trajectory


def _answers(*answers):
    """Rows scored on their answer only: two prompt tokens (-100), then the answer's tokens."""
    return datasets.Dataset.from_dict({"labels": [[-100, -100, *answer] for answer in answers]})


def test_chance_levels_by_hand():
    levels = chance_levels(
        {
            "a": _answers([5], [5], [6], [6]),  # two answers, balanced
            "b": _answers([1, 2], [1, 3], [1, 2], [1, 2]),  # first token fixed; second: 2 three times, 3 once
        }
    )
    assert levels["chance_loss"]["a"] == pytest.approx(math.log(2))
    assert levels["chance_accuracy"]["a"] == 0.5
    # Token-weighted over the 8 answer tokens: position 0 costs nothing, position 1 has entropy H(3/4, 1/4) each.
    second = -(3 * math.log(3 / 4) + math.log(1 / 4))
    assert levels["chance_loss"]["b"] == pytest.approx(second / 8)
    assert levels["chance_accuracy"]["b"] == 0.75


def _reference_file(tmp_path, *records):
    path = tmp_path / "reference.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_explain_summary_lines(tmp_path):
    summary = {
        "loss": {"1": 0.3, "2": 0.6, "3": 0.9},
        "accuracy": {"1": 0.9, "2": 0.7, "3": 0.5},
        "chance_loss": {"1": 0.69, "2": 0.69, "3": 0.69},
    }
    trajectory = [{"round": 1, "global_step": 10, "eval_loss": {"1": 1.0, "2": 1.0, "3": 1.0}}]
    reference = _reference_file(
        tmp_path,
        {"label": "stratified", "budget": 320, "loss": {"1": 0.4, "2": 0.8, "3": 1.0}, "accuracy": {"3": 0.4}},
        {"label": "stratified", "budget": 320, "loss": {"1": 0.4, "2": 0.8, "3": 0.8}, "accuracy": {"3": 0.6}},
    )
    lines = explain_summary(summary, trajectory, target_skills=["3"], reference=reference, budget=320)
    assert lines[0].endswith("Below chance loss: 2 of 3 skills (1, 2).")
    assert lines[1] == (
        "Moved most (loss after round 1 (step 10) -> final): skill 1 1.000 -> 0.300, skill 2 1.000 -> 0.600, "
        "skill 3 1.000 -> 0.900"
    )
    # The target alone is compared: loss 0.9 against 1.0 and 0.8, accuracy 0.5 against 0.4 and 0.6.
    assert lines[2] == (
        f"This run vs stratified (2 runs in {reference}; same budget, 320 samples), skill 3: "
        "loss 0.900 vs 0.900 ± 0.141 (+0.000); accuracy 0.500 vs 0.500 ± 0.141 (+0.000)"
    )
    # The loss before training, when recorded, is the start; a different budget is said.
    trajectory[0]["initial_eval_loss"] = {"1": 4.0, "2": 2.0, "3": 3.0}
    lines = explain_summary({"loss": summary["loss"]}, trajectory, reference=reference, budget=640)
    assert lines[0] == (
        "Moved most (loss before training -> final): skill 1 4.000 -> 0.300, skill 3 3.000 -> 0.900, "
        "skill 2 2.000 -> 0.600"
    )
    assert "NOT the same budget: reference 320 samples, this run 640" in lines[1]
    # Reference means over the three skills: 2.2 / 3 and 2.0 / 3.
    assert "mean over skills 1, 2, 3: loss 0.600 vs 0.700 ± 0.047 (-0.100)" in lines[1]


def test_format_summary_widens_long_metric_names():
    table = format_summary({"loss": {"1": 0.5}, "chance_accuracy": {"1": 0.25}})
    header, rule, row = table.splitlines()
    assert header.split() == ["skill", "loss", "chance_accuracy"]
    assert len(row) == len(header) == len(rule) and row.split() == ["1", "0.5000", "0.2500"]


def write_trajectory(run_dir, samples_per_round):
    records = [
        {"round": t + 1, "global_step": 30 * (t + 1), "samples": samples, "eval_loss": {"1": 1.0}}
        for t, samples in enumerate(samples_per_round)
    ]
    (run_dir / "skillit_trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_reference_record_and_cli(tmp_path, capsys):
    run = tmp_path / "strat_seed1"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"loss": {"1": 0.5}, "accuracy": {"1": 0.75}, "chance_loss": {}}))
    (run / "recipe.yaml").write_text(
        "training:\n  mixing: stratified\n  seed: 1\n  max_steps: 60\n  per_device_train_batch_size: 32\n"
    )
    # One process: 2 rounds of 30 steps x 32 samples.
    write_trajectory(run, [{"1": 500, "2": 460}, {"1": 470, "2": 490}])
    expected = {
        "label": "uniform",
        "run": "strat_seed1",
        "mixing": "stratified",
        "seed": 1,
        "max_steps": 60,
        "budget": 1920,
        "loss": {"1": 0.5},
        "accuracy": {"1": 0.75},
    }
    assert reference_record(run, "uniform") == expected
    assert main(["reference", str(run), "--label", "uniform"]) == 0
    path = tmp_path / "ref.jsonl"
    path.write_text(capsys.readouterr().out)
    assert read_reference(path) == [expected]
    assert main(["reference", str(tmp_path)]) == 2
    assert "has no summary.json" in capsys.readouterr().err


def test_budget_counts_every_process(tmp_path):
    # The same recipe (60 steps of 32 samples per process) on 2 processes trains on 3840 samples, not 1920: its
    # trajectory's per-round samples are summed across processes. Against a 1-process reference of 1920 samples the
    # comparison must not say "same budget".
    run = tmp_path / "two_processes"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"loss": {"1": 0.5}}))
    (run / "recipe.yaml").write_text("training:\n  max_steps: 60\n  per_device_train_batch_size: 32\n")
    write_trajectory(run, [{"1": 1000, "2": 920}, {"1": 940, "2": 980}])
    record = reference_record(run)
    assert record["budget"] == 3840 == trajectory_budget(read_trajectory(run))
    reference = _reference_file(tmp_path, {**record, "budget": 1920})
    lines = explain_summary(record, read_trajectory(run), reference=reference, budget=record["budget"])
    assert "NOT the same budget: reference 1920 samples, this run 3840" in lines[-1]
    assert trajectory_budget([]) is None and trajectory_budget([{"round": 1}]) is None


def test_bad_reference_files(tmp_path):
    path = tmp_path / "ref.jsonl"
    path.write_text('{"loss": {"1": 0.5}}\nnot json\n')
    with pytest.raises(ValueError, match=r"ref.jsonl:2 is not a JSON object"):
        read_reference(path)
    path.write_text('{"accuracy": {"1": 0.5}}\n')
    with pytest.raises(ValueError, match=r"ref.jsonl:1 has no per-skill 'loss'"):
        read_reference(path)
    with pytest.raises(RecipeError, match="report.reference: 'missing.jsonl' not found"):
        load_recipe("recipes/lego_pretrain.yaml", ["report.reference=missing.jsonl"])
