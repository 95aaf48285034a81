"""FSDP2 (`fully_shard`) with two CPU processes under torchrun (gloo): the model is really sharded, every rank
gets the same mixture and losses, equal to an unsharded single-process evaluation, lm-eval skills included, and a
resume from a sharded checkpoint continues the identical trajectory. Round 0 is scored on the sharded module too."""

import os

import pytest
from conftest import run_two_ranks
from test_lm_eval_hooks import LL_TASK, MC_TASK, task_dir  # noqa: F401 (the fixture)

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "fsdp_run.py")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_fsdp2_rounds_equal_unsharded_evaluation(tmp_path, task_dir):  # noqa: F811
    ranks = run_two_ranks(SCRIPT, str(tmp_path), str(task_dir), "--resume-from-step", "6", output_dir=tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2] and all(r["fsdp_enabled"] for r in ranks)
    # Sharded for real: the MLP weight is a DTensor of which each rank holds half the rows.
    for r in ranks:
        sharding = r["sharding"]
        assert sharding["class"].startswith("FSDP") and sharding["dtensor"]
        assert sharding["local_rows"] * 2 == sharding["full_rows"]
    # Every evaluation, round 0 (before the first step) included, scores the sharded module.
    for r in ranks:
        assert [e["step"] for e in r["evaluations"]] == [0, 4, 8]
        assert all(e["class"].startswith("FSDP") and e["dtensor"] for e in r["evaluations"]), r["evaluations"]

    logs0, logs1 = ranks[0]["logs"], ranks[1]["logs"]
    assert [entry["step"] for entry in logs0] == [4, 8]
    assert logs0 == logs1, "every rank must log the same mixture and losses each round"
    trajectory = ranks[0]["trajectory"]
    # 4 steps x 4 rows per process x 2 processes, counted from the batches each process trained on
    assert [sum(r["samples"].values()) for r in trajectory] == [32, 32]
    assert trajectory[1]["p"] != trajectory[0]["p"], "round 1's losses must move the mixture"

    reference = ranks[0]["reference"]
    assert [r["step"] for r in reference] == [4, 8]
    for record, unsharded in zip(trajectory, reference, strict=True):
        for skill, loss in unsharded["losses"].items():
            assert record["eval_loss"][skill] == pytest.approx(loss, abs=1e-6)
        for task in (LL_TASK, MC_TASK):
            assert record["eval_loss"][task] == pytest.approx(unsharded["lm_eval"][task], abs=1e-5)

    # Resuming a copy of the sharded checkpoint at step 6 (mid-round 2) continues the identical trajectory.
    assert [r["resumed_steps"] for r in ranks] == [[7, 8], [7, 8]], "the resumed run trains steps 7 and 8 only"
    resumed = ranks[0]["resumed_trajectory"]
    assert [r["round"] for r in resumed] == [1, 2]
    assert resumed == trajectory, "the resumed run must reproduce the uninterrupted one exactly"
