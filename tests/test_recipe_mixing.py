"""A recipe's `training.mixing:` accepts every registered mixer, the curricula included (`hf_skillit.curriculum`)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_skillit.mixer_registry import mixer_class
from hf_skillit.recipes import load_recipe, make_trainer

CURRICULA = ["curriculum", "anticurriculum", "skill_curriculum", "skill_anticurriculum"]


def lego_recipe(tmp_path, mixing: str) -> dict:
    return {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "data": {"synthetic": "lego", "generator": {"k": 3}, "num_train_samples": 90, "validation_per_skill": 5},
        "graph": {"reasoning": "chain"},
        "training": {
            **dict(output_dir=str(tmp_path / mixing), mixing=mixing, max_steps=8, rounds=4, report_to="none"),
            **dict(per_device_train_batch_size=4, use_cpu=True, disable_tqdm=True, save_strategy="no"),
        },
    }


@pytest.mark.parametrize("mixing", CURRICULA)
def test_curricula_run_from_a_recipe(tmp_path, mixing):
    trainer = make_trainer(load_recipe(None, raw=lego_recipe(tmp_path, mixing)))
    assert isinstance(trainer.mixer, mixer_class(mixing))
    trainer.train()
    trajectory = trainer.trajectory
    assert [r["global_step"] for r in trajectory] == [2, 4, 6, 8]  # the skill curricula need a round per skill + 1
    for record in trajectory:
        p = np.array(list(record["p"].values()))
        assert np.isclose(p.sum(), 1.0) and sum(record["samples"].values()) == 8
    # A curriculum's schedule moves between its rounds (easy/hard first, then the rest).
    assert trajectory[0]["p"] != trajectory[-1]["p"]


def test_dry_run_of_a_curriculum_needs_the_model_and_loads_none(tmp_path):
    from hf_skillit.recipes import describe_run

    plan = describe_run(load_recipe(None, raw=lego_recipe(tmp_path, "curriculum")))
    assert "decided by scoring the data with the model, not in a dry run" in plan
    plan = describe_run(load_recipe(None, raw=lego_recipe(tmp_path, "stratified")))
    assert [line.split() for line in plan.splitlines() if line.strip()[:1] in "123" and "0." in line] == [
        [skill, "0.3333"] for skill in "123"
    ]
