"""DDP faults: under torchrun, a rank that dies or hangs makes the whole job fail within `ddp_timeout`, not hang."""

from __future__ import annotations

import random
import re
import subprocess
import time

import psutil
import pytest
from conftest import torchrun_command
from reliability_support import ENV, SCRIPTS, crash_run

# ----- a rank that dies or hangs under torchrun -------------------------------------------------------------------

DDP_TIMEOUT = 5


def _kill_tree(process: subprocess.Popen) -> None:
    # torchrun starts each rank in its own session: kill the ranks one by one, then torchrun.
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.communicate()


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "fault",
    [
        "dies",
        "hangs",
    ],
)
def test_rank_fault_fails_the_job_within_ddp_timeout(tmp_path, fault):
    """Rank 1 is SIGKILLed (or hangs) mid-step: torchrun must exit non-zero within ddp_timeout of the fault."""
    stamp, log = tmp_path / "fault_time", tmp_path / "torchrun.log"
    env = {**ENV, "CRASH_STAMP": str(stamp), **({"CRASH_HANG": "1"} if fault == "hangs" else {})}
    command = torchrun_command(2)
    script = [str(SCRIPTS / "crash_run.py"), str(tmp_path / "run"), f"--rows={tmp_path}/rows-{{rank}}.jsonl"]
    kill = f"forward:{random.Random(7).randint(3, 2 * crash_run.MAX_STEPS - 3)}"
    with open(log, "w") as output:  # a file, not a pipe: nobody reads while the test waits
        process = subprocess.Popen(
            [*command, *script, f"--kill={kill}", "--rank=1", f"--ddp-timeout={DDP_TIMEOUT}"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 180
        while not stamp.is_file() and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert stamp.is_file(), f"rank 1 never reached {kill}:\n{log.read_text()[-3000:]}"
        fault_time = float(stamp.read_text())
        try:
            process.wait(timeout=max(0.0, fault_time + DDP_TIMEOUT + 20 - time.time()))
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the job still runs {DDP_TIMEOUT + 20} s after rank 1 {fault}, with ddp_timeout={DDP_TIMEOUT}"
            )
    finally:
        if process.poll() is None:
            _kill_tree(process)
    text = log.read_text()
    assert process.returncode != 0
    if fault == "dies":
        # torchrun names the rank at fault. Rank 0 stops either on its own error (gloo: the peer is gone) or, when
        # torchrun's monitor sees rank 1's exit before rank 0 reaches the next collective (a race a loaded machine
        # wins: seen in a CI-like run), by torchrun's SIGTERM; both end the job at once.
        assert "rank      : 1 (local_rank: 1)\n  exitcode  : -9" in text and "SIGKILL" in text, text[-3000:]
        assert "[rank0]: RuntimeError" in text or "closing signal SIGTERM" in text, text[-3000:]
    else:
        # gloo words it "Timed out waiting 5000ms for recv" or "Application timeout caused pair closure".
        assert re.search(r"\[rank0\]: RuntimeError: .*(?i:timed out|timeout)", text), text[-3000:]
