"""Two CPU processes under torchrun (gloo): every rank sees the same mixture, losses equal one process's."""

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "ddp_run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("dispatch", ["dispatch", "no_dispatch"])
def test_two_process_ddp_rounds_agree(tmp_path, dispatch):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    done = subprocess.run(
        [*command, SCRIPT, str(tmp_path), dispatch], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
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
