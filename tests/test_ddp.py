"""Two CPU processes under torchrun (gloo) on rows of different lengths, map-style and streaming, with both of
Accelerate's dispatch settings (and `split_batches=True`): every rank gets the same mixture and losses, and each equals one process training on
both ranks' rows at once (batches of 8): the same p each round, the same counts, the same rows in each rank's half
of every batch, the same losses."""

import importlib.util
import os

import numpy as np
import pytest
from conftest import run_two_ranks

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "ddp_run.py")


def load_script():
    spec = importlib.util.spec_from_file_location("ddp_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The runs' recomputation: one process, batches of 8 (map-style and streaming skills)."""
    script = load_script()
    root = tmp_path_factory.mktemp("single")
    return {kind: script.train(str(root), kind, "no_dispatch", single=True)[1] for kind in ("map", "streaming")}


def check_equal_to_one_process(run: str, ranks: list[dict], one: dict) -> None:
    """Both ranks logged the same p and losses each round; each trained on its half of every one of the single
    process's batches (4 rows of 8), row for row; p, the counts and the losses equal the single process's."""
    rank0, rank1 = ranks
    assert [rank0["world_size"], rank1["world_size"]] == [2, 2]
    assert [entry["step"] for entry in rank0["logs"]] == [4, 8, 12], run
    assert rank0["logs"] == rank1["logs"], f"{run}: every rank must log the same mixture and losses each round"
    for r, rank in enumerate(ranks):
        assert rank["micro_batches"] == [batch[4 * r : 4 * r + 4] for batch in one["micro_batches"]], (run, r)
    lengths = {tokens for batch in one["micro_batches"] for _, tokens in batch}
    assert min(lengths) < 10 and max(lengths) > 25, "the rows must differ in length"

    def logged(logs):
        return np.array(
            [[value for key, value in sorted(entry.items()) if key.startswith("skillit/")] for entry in logs]
        )

    assert sorted(rank0["logs"][0]) == sorted(one["logs"][0])
    np.testing.assert_allclose(logged(rank0["logs"]), logged(one["logs"]), atol=1e-5, err_msg=run)
    trajectory = rank0["trajectory"]
    # 4 steps x 4 rows per process x 2 processes, counted from the batches each process trained on
    assert [sum(r["samples"].values()) for r in trajectory] == [32, 32, 32]
    assert [r["samples"] for r in trajectory] == [r["samples"] for r in one["trajectory"]], run
    # Trained tokens, summed over the ranks, are the single process's (rows of different lengths).
    assert [r["tokens"] for r in trajectory] == [r["tokens"] for r in one["trajectory"]], run
    assert trajectory[1]["p"] != trajectory[0]["p"], "round 1's losses must move the mixture"
    for record, expected in zip(trajectory, one["trajectory"], strict=True):
        assert record["p"] == pytest.approx(expected["p"], abs=1e-6), run
        assert record["eval_loss"] == pytest.approx(expected["eval_loss"], abs=1e-5), run
    for skill, loss in rank0["single_process_losses"].items():
        assert trajectory[-1]["eval_loss"][skill] == pytest.approx(loss, abs=1e-5), run


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_on_rows_of_different_lengths_equals_one_process(tmp_path, single_process):
    ranks = run_two_ranks(SCRIPT, str(tmp_path), output_dir=tmp_path)
    runs = [f"{kind}-{mode}" for kind in ("map", "streaming") for mode in ("dispatch", "no_dispatch")]
    runs += ["map-split_dispatch", "map-split_no_dispatch"]
    assert sorted(ranks[0]) == sorted(ranks[1]) == sorted(runs)
    for run in runs:
        check_equal_to_one_process(run, [rank[run] for rank in ranks], single_process[run.split("-")[0]])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_deepspeed_zero2_equals_one_process(tmp_path, single_process):
    """DeepSpeed (installed from the registry with the `deepspeed` extra) runs ZeRO-2 on two CPU processes (gloo):
    each process holds half of the optimizer's weights, and the run equals one process training alone."""
    ranks = [rank["map-zero2"] for rank in run_two_ranks(SCRIPT, str(tmp_path), "--zero2", output_dir=tmp_path)]
    for rank in ranks:
        assert rank["engine"] == "DeepSpeedEngine" and rank["zero_stage"] == 2
        assert abs(2 * rank["partition"] - rank["parameters"]) <= 2, "ZeRO-2 partitions the fp32 weights in two"
    check_equal_to_one_process("map-zero2", ranks, single_process["map"])
