"""The run directory (`hf_skillit.rundir`): the trajectory reader drops a torn last line (for resume and plotting
alike), whole-file writes are atomic, checkpoints count once complete, and a run directory is not reused unasked."""

import json

import pytest

from hf_skillit import rundir
from hf_skillit.plotting import plot_run

ROUNDS = [
    {"round": 1, "global_step": 2, "p": {"a": 0.5, "b": 0.5}, "samples": {"a": 4, "b": 4}, "eval_loss": {"a": 2.0}},
    {"round": 2, "global_step": 4, "p": {"a": 0.7, "b": 0.3}, "samples": {"a": 6, "b": 2}, "eval_loss": {"a": 1.5}},
]


def write_trajectory(run_dir, records, torn: str = "") -> None:
    text = "".join(json.dumps(record) + "\n" for record in records)
    (run_dir / rundir.TRAJECTORY_NAME).write_text(text + torn)


def test_torn_last_line_is_dropped(tmp_path):
    # A crash halfway through appending round 3 leaves half a JSON line.
    write_trajectory(tmp_path, ROUNDS, torn='{"round": 3, "global_st')
    assert rundir.read_trajectory(tmp_path) == ROUNDS
    assert rundir.load_trajectory(tmp_path) == ROUNDS
    assert len(plot_run(tmp_path)) == 2  # plotting reads through the same reader: mixture and losses


def test_damage_before_the_last_line_is_an_error(tmp_path):
    write_trajectory(tmp_path, ROUNDS[:1], torn='{"round": 2\n' + json.dumps(ROUNDS[1]) + "\n")
    with pytest.raises(ValueError, match="line 2, is not JSON: the file is damaged"):
        rundir.read_trajectory(tmp_path)


def test_missing_or_empty_trajectory(tmp_path):
    assert rundir.read_trajectory(tmp_path) == []
    with pytest.raises(ValueError, match="is not a Skill-It run directory: it has no skillit_trajectory.jsonl"):
        rundir.load_trajectory(tmp_path)
    write_trajectory(tmp_path, [], torn="\n")
    with pytest.raises(ValueError, match="holds no rounds yet"):
        rundir.load_trajectory(tmp_path)


def test_append_and_truncate(tmp_path):
    for record in ROUNDS:
        rundir.append_trajectory(tmp_path, record)
    assert rundir.read_trajectory(tmp_path) == ROUNDS
    rundir.truncate_trajectory(tmp_path, rounds_done=1)
    assert rundir.read_trajectory(tmp_path) == ROUNDS[:1]
    assert [p.name for p in tmp_path.iterdir()] == [rundir.TRAJECTORY_NAME], "no temporary file left behind"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "state.json"
    rundir.atomic_write_json(path, {"step": 1}, indent=1)
    assert json.loads(path.read_text()) == {"step": 1}

    def fail(tmp):
        tmp.write_text('{"step": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_complete_checkpoints(tmp_path):
    for step, files in ((2, ("trainer_state.json", rundir.STATE_NAME)), (4, (rundir.STATE_NAME,))):
        folder = tmp_path / f"{rundir.CHECKPOINT_PREFIX}-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("{")  # cut short
    (tmp_path / "checkpoint-6" / rundir.STATE_NAME).write_text("{}")
    # 6 is torn and 4 lacks the Trainer's state (written last): 2 is the newest complete one.
    assert rundir.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert rundir.last_complete_checkpoint(tmp_path / "nowhere") is None


def test_a_run_directory_is_not_reused_unasked(tmp_path):
    rundir.check_fresh_output_dir(tmp_path, overwrite=False)  # no run there yet
    write_trajectory(tmp_path, ROUNDS)
    rundir.check_fresh_output_dir(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match=r"training.output_dir '.*' holds another run .*; use --resume"):
        rundir.check_fresh_output_dir(tmp_path, overwrite=False, where="training.output_dir", advice="use --resume")
