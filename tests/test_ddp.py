"""Two CPU processes under torchrun (gloo): every rank sees the same mixture, losses equal one process's."""

import os

import pytest
from conftest import run_two_ranks

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "ddp_run.py")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("dispatch", ["dispatch", "no_dispatch"])
def test_two_process_ddp_rounds_agree(tmp_path, dispatch):
    ranks = run_two_ranks(SCRIPT, str(tmp_path), dispatch, output_dir=tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    logs0, logs1 = ranks[0]["logs"], ranks[1]["logs"]
    assert [entry["step"] for entry in logs0] == [4, 8, 12]
    assert logs0 == logs1, "every rank must log the same mixture and losses each round"
    trajectory = ranks[0]["trajectory"]
    # 4 steps x 4 rows per process x 2 processes, counted from the batches each process trained on
    assert [sum(r["samples"].values()) for r in trajectory] == [32, 32, 32]
    assert trajectory[1]["p"] != trajectory[0]["p"]
    final = trajectory[-1]["eval_loss"]
    for skill, loss in ranks[0]["single_process_losses"].items():
        assert final[skill] == pytest.approx(loss, abs=1e-5)
