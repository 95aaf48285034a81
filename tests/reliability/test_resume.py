"""Resume: runs SIGKILLed at seeded-random points (mid-step, inside a round-boundary evaluation, while a checkpoint or
the trajectory is written) resume from the last complete checkpoint with the uninterrupted run's p trajectory,
per-skill counts, losses and data order (tests/scripts/crash_run.py); `learn_graph` killed mid-run resumes without
training finished runs again, and its files are never half-written; same seed, same run; another seed or data_seed,
another data order.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
from reliability_support import (
    ACCUMULATION,
    SCRIPTS,
    STEPS_PER_ROUND,
    crash_learn_graph,
    crash_run,
    read_jsonl,
    reference_fixture,
    run_scripts,
)

from hf_skillit import SkillsGraph, last_complete_checkpoint
from hf_skillit.rundir import TRAJECTORY_NAME

reference = reference_fixture()


# ----- SIGKILL, then resume ------------------------------------------------------------------------------------------

_rng = random.Random(230714430)
_checkpoints = list(range(2 * crash_run.SAVE_STEPS, crash_run.MAX_STEPS + 1, crash_run.SAVE_STEPS))
KILLS = {
    # After the first checkpoint, so that there is one to resume from.
    "forward": f"forward:{_rng.randint(crash_run.SAVE_STEPS * ACCUMULATION + 1, crash_run.MAX_STEPS * ACCUMULATION)}",
    "eval": f"eval:{_rng.randint(1, crash_run.ROUNDS)}",
    "save": f"save:{_rng.choice(_checkpoints)}",
    "save_partial": f"save_partial:{_rng.choice(_checkpoints)}",
    "trajectory": f"trajectory:{_rng.randint(1, crash_run.ROUNDS)}",
}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> Path:
    """One process per kill point (forked from a single interpreter by crash_run.py), each SIGKILLed."""
    root = tmp_path_factory.mktemp("killed")
    run_scripts(str(SCRIPTS / "crash_run.py"), str(root), *(f"--kill={kill}" for kill in KILLS.values()))
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [pytest.param(point, id=kill) for point, kill in KILLS.items()],
)
def test_sigkilled_run_resumes_the_uninterrupted_run(killed_runs, reference, point):
    kill = KILLS[point]
    n = int(kill.partition(":")[2])
    name = kill.replace(":", "-")
    out = killed_runs / name
    assert json.loads((killed_runs / f"{name}.status").read_text()) == {"signal": signal.SIGKILL}, "not killed"
    killed_rows = read_jsonl(killed_runs / f"{name}.rows.jsonl")
    assert killed_rows == reference["rows"][: len(killed_rows)], "the killed run trained on other data"

    checkpoint = last_complete_checkpoint(str(out))
    assert checkpoint is not None
    step = int(checkpoint.rpartition("-")[2])
    if point.startswith("save"):
        assert (out / f"checkpoint-{n}" / "skillit_state.json").is_file(), "the kill landed before skillit_state"
        assert step == n - crash_run.SAVE_STEPS, "the half-written checkpoint must be skipped"
    if point == "eval":
        assert all(record["round"] < n for record in read_jsonl(out / TRAJECTORY_NAME)), "round n never ended"

    rows = killed_runs / f"{name}.resumed.jsonl"
    trainer = crash_run.build_trainer(str(out), str(rows))
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == crash_run.MAX_STEPS
    # The resumed round is read again from its start; its batches trained before the checkpoint are dropped.
    round_start = step // STEPS_PER_ROUND * STEPS_PER_ROUND
    assert read_jsonl(rows) == reference["rows"][round_start * ACCUMULATION :]
    # Same p, counts and (bit-identical) losses in every round.
    assert trainer.trajectory == reference["trajectory"]


# ----- learn_graph killed ---------------------------------------------------------------------------------------------

_PLAN = ["single-0", "single-1", "pair-0-1"]  # crash_learn_graph's runs, in training order
GRAPH_KILLS = {"train": f"train:{random.Random(3).randint(2, 3)}", "run_file": "run_file:2", "graph": "graph"}


@pytest.fixture(scope="module")
def killed_learn_graph(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learn_graph")
    run_scripts(str(SCRIPTS / "crash_learn_graph.py"), str(root), *GRAPH_KILLS.values())
    return root


@pytest.mark.slow
@pytest.mark.parametrize("point", ["train", "run_file"], ids=[GRAPH_KILLS["train"], GRAPH_KILLS["run_file"]])
def test_learn_graph_killed_mid_run_resumes_without_redoing_runs(killed_learn_graph, point):
    from hf_skillit.graph_learning import merge_runs

    kill = GRAPH_KILLS[point]
    out = killed_learn_graph / kill.replace(":", "-")
    assert json.loads((out.parent / f"{out.name}.status").read_text()) == {"signal": signal.SIGKILL}
    killed_run = int(kill.partition(":")[2])
    finished = {f"{run}.json" for run in _PLAN[: killed_run - 1]}
    assert {p.name for p in (out / "runs").glob("*.json")} == finished
    for path in (out / "runs").glob("*.json"):
        json.loads(path.read_text())  # every run file there is whole
    stamps = {name: os.stat(out / "runs" / name).st_mtime_ns for name in finished}
    with pytest.raises(ValueError, match="runs are not finished"):
        merge_runs(out)

    init = crash_learn_graph.CountingInit()
    graph = crash_learn_graph.learn(str(out), model_init=init)
    assert init.calls == len(_PLAN) - len(finished)
    assert {name: os.stat(out / "runs" / name).st_mtime_ns for name in finished} == stamps
    uninterrupted = json.loads((killed_learn_graph / "graph" / "measurements.json").read_text())
    np.testing.assert_array_equal(graph.matrix, uninterrupted["delta_pair"])


@pytest.mark.slow
def test_graph_file_survives_a_kill_while_it_is_replaced(killed_learn_graph):
    from hf_skillit.graph_learning import merge_runs

    out = killed_learn_graph / "graph"
    assert json.loads((killed_learn_graph / "graph.status").read_text()) == {"signal": signal.SIGKILL}
    assert list(out.glob(".graph.json.*.tmp")), "the kill landed after the new graph was written aside"
    before = SkillsGraph.load(out / "graph.json")  # the previous graph, whole
    assert before.metadata["edge_rule"] == "delta"
    assert merge_runs(out, edge_rule="positive").metadata["edge_rule"] == "positive"
    init = crash_learn_graph.CountingInit()
    assert crash_learn_graph.learn(str(out), model_init=init) is not None
    assert init.calls == 0, "every run was finished"


# ----- determinism ----------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_run(tmp_path, reference):
    trainer = crash_run.build_trainer(str(tmp_path / "run"), str(tmp_path / "rows.jsonl"), save_strategy="no")
    trainer.train()
    assert trainer.trajectory == reference["trajectory"]  # p, per-skill counts and losses, bit for bit
    assert read_jsonl(tmp_path / "rows.jsonl") == reference["rows"]


@pytest.mark.parametrize(
    ("seed", "same"), [({}, True), ({"seed": 1}, False), ({"data_seed": 1}, False)], ids=["same", "seed", "data_seed"]
)
def test_another_seed_changes_the_data_order(tmp_path, reference, seed, same):
    """The first round alone (same p_1, same round size as the reference): only the seed can change its rows."""
    trainer = crash_run.build_trainer(
        str(tmp_path / "run"), str(tmp_path / "rows.jsonl"), save_strategy="no", max_steps=4, rounds=1, **seed
    )
    trainer.train()
    rows = read_jsonl(tmp_path / "rows.jsonl")
    assert len(rows) == STEPS_PER_ROUND * ACCUMULATION
    assert (rows == reference["rows"][: len(rows)]) is same
