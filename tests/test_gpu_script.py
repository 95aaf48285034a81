"""`benchmarks/gpu/run.py --smoke`: the GPU comparison script, end to end on the CPU with a tiny llama GGUF.

The smoke mode takes every path the GPU run takes (GGUF written and converted by `hf_skillit.pretrained`, the
timing child, the FSDP check through `accelerate launch`, a wave of parallel training processes that calibrate and
agree on their number of steps, the report) with a tiny model and a few steps, so the script works on its first
try where device time is scarce.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="the `pretrained` extra (pip install 'hf-skillit[pretrained]') is not installed")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.py"


@pytest.mark.slow
def test_gpu_script_smoke_mode_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("OUT", None)
    start = time.time()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    wall = time.time() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "addition_curves.png",
        "lego_curves.png",
        "log.txt",
        "results.json",
        "results.md",
    ]
    report = json.loads((out / "results.json").read_text())
    # No bound on the wall time: it measures the machine's load as much as the script (185-221 s at load 17-20
    # here, against the smoke budget of 150 s); the report carries it.
    assert report["smoke"] and report["device"] == "cpu" and report["wall_s"] > 0

    timing = report["timing"]
    for trainer in ("skillit_trainer", "skillit_trainer_all_logits", "plain_trainer"):
        assert timing[trainer]["steps_timed"] == timing["steps"] - timing["warmup"] - 1
        assert timing[trainer]["samples_per_s"] == pytest.approx(
            timing["batch"] / timing[trainer]["s_per_step"], rel=1e-3
        )
    all_logits = timing["skillit_trainer_all_logits"]["s_per_step"]
    assert timing["skillit_overhead_pct"] == pytest.approx(
        100 * (all_logits / timing["plain_trainer"]["s_per_step"] - 1), abs=0.01
    )
    ratio = timing["stream_samples_per_s"] / timing["skillit_trainer"]["samples_per_s"]
    assert timing["stream_over_training"] == pytest.approx(ratio, abs=0.06)

    runs = {r["name"]: r for r in report["runs"]}
    expected = {"lego_skill_it_seed0", "lego_stratified_seed0", "lego_random_seed0", "addition_skill_it_seed0"}
    expected.add("lego_skill_it_code_seed0")  # the reference code's setting (window of evaluations)
    assert expected <= set(runs) and all(r["ok"] for r in runs.values())
    for run in runs.values():
        rounds = report["settings"]["tasks"][run["task"]]["rounds"]
        assert run["steps_done"] == run["steps"] and len(run["trajectory"]) == rounds
        # Every round trains steps/rounds batches, drawn from that round's mixture, and the curve starts at step 0.
        for record in run["trajectory"]:
            assert sum(record["samples"].values()) == run["steps"] // rounds * report["settings"]["batch"]
            assert math.isclose(sum(record["p"].values()), 1.0, abs_tol=1e-9)
        assert run["curve"][0]["step"] == 0 and run["curve"][-1]["step"] == run["steps"]
        assert all(0.0 <= a <= 1.0 for point in run["curve"] for a in point["accuracy"].values())
    # The methods of a wave agreed on one number of steps; stratified keeps p uniform, random follows the pool.
    assert len({r["steps"] for r in runs.values() if r["task"] == "lego"}) == 1
    assert all(p == pytest.approx(0.2) for p in runs["lego_stratified_seed0"]["trajectory"][0]["p"].values())
    random_p = runs["lego_random_seed0"]["trajectory"][0]["p"]
    assert random_p["5"] > random_p["4"] > random_p["1"]  # the imbalanced pool 1:1:1:3:5

    fsdp = report["fsdp"]
    assert fsdp["ok"] and fsdp["rounds"] == 2 and fsdp["losses_finite"]
    # Rows of different lengths; round 0 measured on the model as the later rounds measured it (on the CPU: one
    # process, where accelerate leaves FSDP off, so the same plain module on the CPU without autocast).
    assert fsdp["row_lengths"][0] == 4 and fsdp["row_lengths"][1] > 10
    assert fsdp["round0_evaluated"] and fsdp["round0_as_later_rounds"], fsdp["evaluation_forwards"]
    markdown = (out / "results.md").read_text()
    assert "| SkillItTrainer (LM head at the scored positions" in markdown and "| transformers.Trainer |" in markdown
    assert "## lego: validation at step" in markdown and "| skill_it_code | code |" in markdown
    assert "FSDP smoke check" in markdown and "passed" in markdown
    print(f"smoke mode: {wall:.0f} s wall")


def _model_files():
    """`benchmarks/gpu/model_files.py`, imported as the script imports it (the repository root on the path)."""
    import importlib

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.gpu.model_files")


def test_gguf_parts_reassemble_and_a_missing_part_is_named(tmp_path, monkeypatch):
    import hashlib

    script = _model_files()
    data = bytes(range(256)) * 1000
    monkeypatch.setattr(script, "SMOLLM2_SIZE", len(data))
    monkeypatch.setattr(script, "SMOLLM2_SHA256", hashlib.sha256(data).hexdigest())
    script.split_parts(data, tmp_path / "parts", part_bytes=100_000)
    assert sorted(p.stat().st_size for p in (tmp_path / "parts").glob("part*/*")) == [100_000, len(data) - 100_000]
    work = tmp_path / "work"
    work.mkdir()
    assert script._assemble(tmp_path / "parts", work).read_bytes() == data
    for piece in (tmp_path / "parts" / "part1").iterdir():
        piece.unlink()
    with pytest.raises(SystemExit, match="a part is missing"):
        script._assemble(tmp_path / "parts", work)
