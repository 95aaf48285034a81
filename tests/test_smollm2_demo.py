"""The pretrained-model demo (`make demo-pretrained`, `benchmarks/smollm2/demo.py`) and the runner of the issue-20
tables it shares its code with (`benchmarks/smollm2/tables.py`), on the tiny llama GGUF of test_pretrained.py instead
of SmolLM2: real `hf-skillit train` processes, LoRA, bf16 autocast, the recipe of the real runs; nothing downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hf_skillit.pretrained import write_llama_gguf
from hf_skillit.synthetic import build_bpe_tokenizer, make_tiny_model, tiny_llama_config

pytest.importorskip("gguf", reason="the `pretrained` extra (pip install 'hf-skillit[pretrained]') is not installed")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "smollm2"
sys.path.insert(0, str(BENCH))
import demo  # noqa: E402
import tables  # noqa: E402


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    bpe = build_bpe_tokenizer()
    model = make_tiny_model(tiny_llama_config(bpe), seed=0)
    return write_llama_gguf(model, bpe, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.mark.slow
def test_demo_trains_both_methods_prints_and_plots(gguf_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_SKILLIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    argv = [
        "--output-dir",
        str(out),
        "--model",
        str(gguf_file),
        "--steps",
        "4",
        "--rounds",
        "2",
        "--train-samples",
        "300",
    ]
    table = demo.main(argv)

    runs = {m: json.loads((out / "runs" / f"{m}_seed0.json").read_text()) for m in demo.METHODS}
    for method, run in runs.items():
        assert run["seed"] == 0 and [p["step"] for p in run["curve"]] == [0, 2, 4], method
        assert all(set(p["loss"]) == {"1", "2", "3"} for p in run["curve"])
        assert all(abs(sum(r["p"].values()) - 1) < 1e-9 for r in run["p"])
        assert "model.pretrained=" + str(gguf_file) in run["command"]
        assert "graph.path=" + str(tables.GRAPH) in run["command"]  # the learned graph, shipped
    assert [r["p"] for r in runs["target_only"]["p"]] == [{"1": 0.0, "2": 0.0, "3": 1.0}] * 2
    assert all(r["p"]["1"] > 0 for r in runs["skill_it"]["p"])  # the mixture samples every skill
    # Before training both runs start from the same model and validation data: the same losses.
    assert runs["skill_it"]["curve"][0]["loss"] == pytest.approx(runs["target_only"]["curve"][0]["loss"])

    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 0", "| 2", "| 4"]
    last = runs["target_only"]["curve"][-1]["loss"]
    assert f"{last['3']:.3f}" in lines[-1] and f"{last['1']:.3f} / {last['2']:.3f}" in lines[-1]
    assert (out / "demo.png").stat().st_size > 0 and "Plot:" in capsys.readouterr().out
    assert not (out / "work").exists() or not any((out / "work").iterdir())  # training folders removed

    # Rerun: finished runs are reused, not trained again.
    stamp = (out / "runs" / "skill_it_seed0.json").stat().st_mtime_ns
    assert demo.main(argv) == table
    assert (out / "runs" / "skill_it_seed0.json").stat().st_mtime_ns == stamp

    # The table runner reports the same runs (one seed, two methods: a partial table, said so).
    report = tables.report(out, demo.METHODS, [0, 1], tables.parse_args(argv[2:] + ["--output-dir", str(out)]))
    assert "PARTIAL" in report and "Steps to loss ≤ 0.3" in report and "Target skill only" in report


def test_table_runs_use_the_graph_file_and_the_chosen_settings(tmp_path):
    args = tables.parse_args(["--graph", "recipes/graphs/lego_k3.json", "--steps", "240"])
    sets = tables.overrides("stratified", 3, args, tmp_path / "run")
    assert "graph.path=recipes/graphs/lego_k3.json" in sets and "graph.reasoning=null" in sets
    for chosen in ("training.bf16=true", "training.per_device_train_batch_size=8", "training.max_steps=240"):
        assert chosen in sets
    assert "training.seed=3" in sets and "data.seed=3" in sets and "training.mixing=stratified" in sets
    assert "graph.path" not in " ".join(
        tables.overrides("stratified", 3, tables.parse_args(["--graph", "chain"]), tmp_path)
    )


def test_table_runner_refuses_a_missing_graph_before_training(tmp_path):
    with pytest.raises(SystemExit, match="graph file .*nowhere.json.* not found"):
        tables.main(["--graph", str(tmp_path / "nowhere.json"), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_run_says_which_and_shows_its_log_and_leaves_no_result(tmp_path):
    missing = tmp_path / "missing.gguf"
    argv = ["--graph", "chain", "--model", str(missing), "--seeds", "7", "--methods", "target_only"]
    with pytest.raises(SystemExit, match=r"(?s)target_only seed 7 failed \(exit 2\).*missing\.gguf"):
        tables.main([*argv, "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "runs").exists()


def test_table_report_pairs_against_a_reference_and_averages_skills_for_pretraining(tmp_path):
    """Hand-made curves: the pre-training report has the average column, the paired table subtracts the chosen
    reference, and runs shared with another table are read from it (`--also`)."""

    def write(out, method, seed, losses_by_step):
        curve = [
            {"step": step, "loss": dict(zip(tables.SKILLS, losses, strict=True))} for step, losses in losses_by_step
        ]
        path = out / "runs" / f"{method}_seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"method": method, "seed": seed, "curve": curve, "p": [], "seconds": 1.0}))

    own, shared = tmp_path / "pretrain", tmp_path / "finetune"
    # aioli: average 0.5 -> 0.2 -> 0.05 at steps 0/120/240 on seed 0, 0.6 -> 0.4 -> 0.2 on seed 1
    write(own, "aioli", 0, [(0, [0.5] * 3), (120, [0.2] * 3), (240, [0.0, 0.05, 0.1])])
    write(own, "aioli", 1, [(0, [0.6] * 3), (120, [0.4] * 3), (240, [0.2] * 3)])
    # stratified, in the other table's directory: seed 0 average 0.3 at 240, seed 1 0.1 (reached 0.3 at 120)
    write(shared, "stratified", 0, [(0, [0.5] * 3), (120, [0.5] * 3), (240, [0.3] * 3)])
    write(shared, "stratified", 1, [(0, [0.6] * 3), (120, [0.3] * 3), (240, [0.1] * 3)])
    args = tables.parse_args(
        ["--setting", "pretrain", "--steps", "240", "--output-dir", str(own), "--also", str(shared)]
        + ["--reference", "aioli", "--report-only"]
    )
    text = tables.report(own, ["aioli", "stratified"], [0, 1], args)
    assert "Seeds [0, 1] (2 of 2)" in text and "average @ 240" in text
    paired = [line for line in text.splitlines() if line.startswith("| Skill-stratified |")][-1]  # the paired table
    cells = [c.strip() for c in paired.strip("|").split("|")]
    header = next(line for line in text.splitlines() if line.startswith("| Aioli minus"))
    names = [c.strip() for c in header.strip("|").split("|")]
    # loss at 240 on the average: seed 0 0.05 - 0.3 = -0.25, seed 1 0.2 - 0.1 = +0.1: mean -0.075, std 0.247
    assert cells[names.index("loss @ 240, average")] == "-0.075 ± 0.247 (1/2 lower)"
    # steps to 0.3 on the average: seed 0 aioli 120, stratified 240 -> -120; seed 1 aioli 240, stratified 120 -> +120
    assert cells[names.index("steps to 0.3, average")] == "0 ± 170 (1/2 sooner)"
    # steps to 0.1 on skill 1: seed 0 aioli 240, stratified never (counts 240) -> 0; seed 1 never vs 240 -> 0
    assert cells[names.index("steps to 0.1, skill 1")] == "0 ± 0 (0/2 sooner)"


@pytest.mark.slow
def test_an_aioli_table_run_keeps_the_mixing_law_it_estimated(gguf_file, tmp_path, monkeypatch):
    """Aioli through the table runner (issue 25's SmolLM2 comparison, on the tiny GGUF): the result keeps A of
    every round, since the run's folder, where the trajectory was, is removed."""
    monkeypatch.setenv("HF_SKILLIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "aioli"
    tables.main(
        ["--model", str(gguf_file), "--methods", "aioli", "--seeds", "0", "--steps", "8", "--rounds", "2"]
        + ["--train-samples", "300", "--eta", "0.1", "--output-dir", str(out)]
        + ["--extra", "training.aioli_sweeps=1", "training.aioli_probe_steps=1"]
    )
    run = json.loads((out / "runs" / "aioli_seed0.json").read_text())
    assert [r["step"] for r in run["p"]] == [4, 8]
    for record in run["p"]:  # rows: the training skills; columns: the evaluation skills, here the target alone
        assert set(record["A"]) == {"1", "2", "3"} and all(set(row) == {"3"} for row in record["A"].values())
    assert not (out / "work" / "aioli_seed0").exists()
