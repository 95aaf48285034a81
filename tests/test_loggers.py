"""Loggers: the per-round mixture and losses reach TensorBoard through `report_to`, read back from the event files."""

from __future__ import annotations

import glob
import os

import pytest
from conftest import skillit_config

from hf_skillit import SkillItTrainer

SKILLS = ["1", "2", "3"]


def read_scalars(log_dir: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files under `log_dir`."""
    # tensorboard is a dev extra (pip install -e ".[dev]").
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no TensorBoard event file under {log_dir}"
    scalars: dict[str, dict[int, float]] = {}
    for path in files:
        events = EventAccumulator(path, size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    return scalars


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_tensorboard_event_files_hold_the_mixture_and_losses_of_every_round(
    kind, tmp_path, tokenizer, tiny_model, skills, monkeypatch
):
    log_dir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))
    # skillit_config's run with the no-graph mixture, 12 steps in 3 rounds; validation batches of 8.
    settings = dict(
        mixing="no_graph", eta=2.0, rounds=3, max_steps=12, per_device_eval_batch_size=8, report_to=["tensorboard"]
    )
    if kind == "sft":  # the same round logs through TRL's SFTTrainer (pre-tokenized skills: TRL keeps their labels)
        from hf_skillit.integrations.trl import SkillItSFTConfig, SkillItSFTTrainer

        args = skillit_config(tmp_path / "run", SkillItSFTConfig, **settings, bf16=False, gradient_checkpointing=False)
        trainer = SkillItSFTTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    else:
        args = skillit_config(tmp_path / "run", **settings)
        trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    scalars = read_scalars(str(log_dir))
    trajectory = trainer.trajectory
    assert [r["global_step"] for r in trajectory] == [4, 8, 12]
    # transformers' TensorBoardCallback files every training-time log under "train/".
    for skill in SKILLS:
        p, loss = scalars[f"train/skillit/p/{skill}"], scalars[f"train/skillit/loss/{skill}"]
        assert sorted(p) == sorted(loss) == [4, 8, 12], "one point per round, at the round's last step"
        for record in trajectory:
            step = record["global_step"]
            # Event files store float32.
            assert p[step] == pytest.approx(record["p"][skill], rel=1e-6)
            assert loss[step] == pytest.approx(record["eval_loss"][skill], rel=1e-6)
            assert scalars[f"train/skillit/tokens/{skill}"][step] == record["tokens"][skill] > 0
    # The no-graph mixture moves: the logged p differ between rounds (so the test could fail).
    assert len({round(scalars["train/skillit/p/1"][s], 6) for s in (4, 8, 12)}) > 1
