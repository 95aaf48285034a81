"""Non-finite validation losses: a NaN or inf loss keeps the last mixture, warns naming the skill, and training goes
on."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from reliability_support import SKILLS, small_config, small_lego_skills

from hf_skillit import SkillItTrainer, SkillSet, SkillsGraph


@pytest.fixture(scope="module")
def small_skills(tokenizer) -> SkillSet:
    return small_lego_skills(tokenizer)


class Scripted:
    """A `SkillEvaluator` giving skill `probe` a scripted value per round."""

    skills = ("probe",)

    def __init__(self, values: dict[int, float]):
        self.values = values

    def __call__(self, trainer: SkillItTrainer) -> dict[str, float]:
        return {"probe": self.values[trainer.state.global_step // trainer.args.steps_per_round]}


def test_skill_without_scored_tokens_keeps_the_mixture(tmp_path, tokenizer, tiny_model, small_skills, caplog):
    """Skill 3's validation rows score no token (labels all -100): its loss is NaN every round."""
    validation = {s: small_skills.validation(s) for s in SKILLS}
    validation["3"] = validation["3"].map(lambda row: {"labels": [-100] * len(row["labels"])})
    skills = SkillSet({s: small_skills.train(s) for s in SKILLS}, validation)
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=small_config(tmp_path, mixing="no_graph"),
        skills=skills,
        processing_class=tokenizer,
    )
    with pytest.warns(RuntimeWarning, match=r"non-finite validation losses \{'3': nan\}"):
        trainer.train()
    assert trainer.state.global_step == 6
    assert "'3': nan" in caplog.text
    for record in trainer.trajectory:
        assert math.isnan(record["eval_loss"]["3"]) and math.isfinite(record["eval_loss"]["1"])
        assert record["p"] == dict.fromkeys(SKILLS, 1 / 3), "p_1 is kept"


def test_non_finite_round_keeps_the_last_mixture(tmp_path, tokenizer, tiny_model, small_skills):
    graph = SkillsGraph(np.array([[1.0, 0, 0, 1.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]), SKILLS, [*SKILLS, "probe"])
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=small_config(tmp_path, max_steps=8, rounds=4, eta=1.0),
        skills=small_skills,
        graph=graph,
        evaluators=[Scripted({1: 3.0, 2: math.nan, 3: math.inf, 4: 3.0})],
        processing_class=tokenizer,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("'probe': nan" in m for m in messages) and any("'probe': inf" in m for m in messages), messages
    assert trainer.state.global_step == 8
    first, second, third, _ = trainer.trajectory
    assert first["next_p"] != first["p"], "a finite round updates p"
    assert second["next_p"] == second["p"] == first["next_p"], "a NaN round keeps the last p"
    assert third["next_p"] == third["p"] == first["next_p"], "an inf round keeps the last p"
