"""`benchmarks/gpu/run.py --smoke`: the GPU comparison script, end to end on the CPU with a tiny llama GGUF.

The smoke mode takes every path the GPU run takes (GGUF written and converted by `hf_skillit.pretrained`, the
timing child, the FSDP check through `accelerate launch`, a wave of parallel training processes that calibrate and
agree on their number of steps per table: pre-training with every weight trained, and the LoRA fine-tuning table on
LEGO target skill 3; the report) with a tiny model and a few steps, so the script works on its first try where
device time is scarce.
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
        timeout=600,  # a hang's safety net: 167-190 s measured at load 10-16 on 2 cores
        env=env,
        cwd=tmp_path,
    )
    wall = time.time() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "addition_curves.png",
        "finetune_curves.png",
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
    finetune = {"finetune_skill_it_seed0", "finetune_target_only_seed0", "finetune_stratified_seed0"}
    assert finetune <= set(runs)
    settings = report["settings"]
    for run in runs.values():
        finetuned = run["table"] == "finetune"
        rounds = settings["finetune"]["rounds"] if finetuned else settings["tasks"][run["task"]]["rounds"]
        assert run["rounds"] == rounds and run["steps_done"] == run["steps"] and len(run["trajectory"]) == rounds
        # Every round trains steps/rounds batches, drawn from that round's mixture, and the curve starts at step 0.
        batch = settings["finetune"]["batch"] if finetuned else settings["batch"]
        for record in run["trajectory"]:
            assert sum(record["samples"].values()) == run["steps"] // rounds * batch
            assert math.isclose(sum(record["p"].values()), 1.0, abs_tol=1e-9)
        assert run["curve"][0]["step"] == 0 and run["curve"][-1]["step"] == run["steps"]
        assert all(0.0 <= a <= 1.0 for point in run["curve"] for a in point["accuracy"].values())
        # Every skill validated, the target and the others, in every table.
        assert all(set(point["loss"]) == set(settings["tasks"][run["task"]]["skills"]) for point in run["curve"])
    # The methods of a table agreed on one number of steps; stratified keeps p uniform, random follows the pool.
    for table in ("lego", "finetune"):
        assert len({r["steps"] for r in runs.values() if r["table"] == table}) == 1
    assert all(p == pytest.approx(0.2) for p in runs["lego_stratified_seed0"]["trajectory"][0]["p"].values())
    random_p = runs["lego_random_seed0"]["trajectory"][0]["p"]
    assert random_p["5"] > random_p["4"] > random_p["1"]  # the imbalanced pool 1:1:1:3:5

    # Fine-tuning: LoRA (the adapter alone trained: 2 tensors, A and B, on q/k/v/o of the tiny llama's 2 layers;
    # peft starts B at zero, so a nonzero B moved; the base weights did not), target skill 3 in every run.
    for name in finetune:
        adapter = runs[name]["adapter"]
        assert adapter["trainable_all_lora"] and adapter["trainable_tensors"] == 2 * 4 * 2, adapter
        assert adapter["lora_B_norm"] > 0 and adapter["base_weights_unchanged"], adapter
        assert runs[name]["target_skills"] == ["3"]
    assert all(r["adapter"] is None for r in runs.values() if r["table"] != "finetune")
    # Every method of the seed starts from the same adapter (and the same base weights: the same converted file).
    assert len({runs[name]["adapter"]["initial_lora_A_norm"] for name in finetune}) == 1
    # Target-only: exactly {"3": 1} in every round, and every sample drawn from skill 3.
    for record in runs["finetune_target_only_seed0"]["trajectory"]:
        assert record["p"] == {"1": 0.0, "2": 0.0, "3": 1.0, "4": 0.0, "5": 0.0}
        assert {s for s, n in record["samples"].items() if n} == {"3"}
    # Stratified: uniform over the target and its prerequisite in the chain's column of skill 3 (2 -> 3).
    for record in runs["finetune_stratified_seed0"]["trajectory"]:
        assert record["p"] == pytest.approx({"1": 0.0, "2": 0.5, "3": 0.5, "4": 0.0, "5": 0.0})
    # Skill-It's first round: p ∝ exp(eta * A[:, 3]) with the chain's column (0, 0.5, 1, 0, 0), by hand.
    eta = settings["finetune"]["eta"]
    scores = {"1": 1.0, "2": math.exp(eta * 0.5), "3": math.exp(eta), "4": 1.0, "5": 1.0}
    first = runs["finetune_skill_it_seed0"]["trajectory"][0]["p"]
    assert first == pytest.approx({s: v / sum(scores.values()) for s, v in scores.items()})
    # Later rounds follow the target's loss: the weights move after round 1.
    assert runs["finetune_skill_it_seed0"]["trajectory"][-1]["p"] != pytest.approx(first)

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
    assert "## Fine-tuning on LEGO k = 5, target skill 3 (LoRA)" in markdown
    for threshold in (0.3, 0.1):
        assert (
            f"Steps to loss ≤ {threshold}:\n\n| Method | skill 1 | skill 2 | skill 3 | skill 4 | skill 5 |" in markdown
        )
    finetune_md = markdown.split("## Fine-tuning")[1]
    for label in ("Skill-It", "Target skill only", "Skill-stratified"):
        assert f"\n| {label} | " in finetune_md
    # Skill-It minus each method, paired by seed: no skill of the tiny model nears 0.3 (about 5 nats) in 24 steps,
    # so both runs count as step 24 and the difference is 0.
    assert "| Skill-It minus | steps to 0.3, skill 1 |" in finetune_md
    assert (
        "\n| Target skill only | 0 (0/1 sooner) |" in finetune_md
        and "\n| Skill-stratified | 0 (0/1 sooner) |" in finetune_md
    )
    print(f"smoke mode: {wall:.0f} s wall")


def test_finetune_settings_are_the_cpu_tables():
    """The GPU fine-tuning table runs the CPU tables' settings: the recipe's LoRA, learning rate and target, and the
    batch and precision `benchmarks/smollm2/tables.py` gives every run."""
    import yaml

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.gpu import settings
    from benchmarks.smollm2 import tables

    recipe = yaml.safe_load((ROOT / "recipes" / "lego_finetune_smollm2_lora.yaml").read_text())
    assert settings.FINETUNE_LORA == recipe["model"]["lora"]
    assert settings.FINETUNE_LR == recipe["training"]["learning_rate"]
    assert recipe["training"]["target_skills"] == [settings.FINETUNE_TARGET] == [tables.TARGET]
    cpu = tables.overrides("skill_it", 0, tables.parse_args([]), Path("run"))
    assert f"training.per_device_train_batch_size={settings.FINETUNE_BATCH}" in cpu and "training.bf16=true" in cpu
    assert f"training.rounds={settings.FINETUNE_ROUNDS}" in cpu


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


def test_each_table_plans_its_steps_from_its_own_processes(tmp_path):
    """The wave's processes share their rates; each table plans from its slowest process and its evaluation times,
    not another table's: steps = the largest multiple that fits 85% of the time left minus its evaluations."""
    import time

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.gpu import jobs

    now = time.time()
    folder = tmp_path / "rates"
    folder.mkdir()
    # Reported by the others 10 s from now: planning starts when the last process has reported, 90 s before the end.
    others = {"finetune_a": (20.0, 0.1, "finetune"), "lego_a": (8.0, 1.0, "lego"), "lego_b": (30.0, 0.2, "lego")}
    for name, (rate, eval_s, table) in others.items():
        entry = {"rate": rate, "eval_s": eval_s, "extra_evaluations": 0, "table": table, "time": now + 10}
        (folder / f"{name}.json").write_text(json.dumps(entry))
    wave = {"barrier": str(tmp_path), "wave_size": 4, "barrier_timeout_s": 5.0, "setting": "paper"}
    wave.update(fixed_steps=False, deadline=now + 100, max_steps=6000)
    finetune = {**wave, "name": "finetune_b", "table": "finetune", "evaluations": 60, "multiple": 60}
    # Slowest fine-tuning process 20 steps/s; 90 x 0.85 - 61 evaluations x 0.1 s = 70.4 s -> 1408 -> 23 x 60.
    assert jobs._agree_on_steps(finetune, 25.0, 0.1) == (1380, 20.0)
    lego = {**wave, "name": "lego_b", "table": "lego", "evaluations": 30, "multiple": 30}
    (folder / "lego_b.json").unlink()  # it reports again, as itself: 30 steps/s, 0.2 s an evaluation
    # Slowest pre-training process 8 steps/s; 76.5 - 31 evaluations x 1.0 s = 45.5 s -> 364 -> 12 x 30.
    assert jobs._agree_on_steps(lego, 30.0, 0.2) == (360, 8.0)
    # No time left for one round of evaluations: one multiple, the deadline stops what does not fit.
    assert jobs._agree_on_steps({**lego, "deadline": now + 20}, 30.0, 0.2) == (30, 8.0)
