"""The reference code's Skill-It variants (HazyResearch/skill-it, trainer/mw_trainer.py) as options: a window
counted in evaluations rather than rounds, and a window whose losses are averaged rather than summed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import softmax_of

from hf_skillit import SkillItConfig, SkillItTrainer
from hf_skillit.graph import SkillsGraph
from hf_skillit.mixing import SkillItMixer, make_mixer


def test_mean_window_divides_the_sum_by_the_rounds_in_it(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=0.5, window=3, reduce="mean")
    mixer.update({"a": 2.0, "b": 1.0})
    p = mixer.update({"a": 1.0, "b": 3.0})
    # mean losses (1.5, 2.0): exponents 0.5 * (1.5 + 0.5 * 2.0) = 1.25 and 0.5 * 2.0 = 1.0
    np.testing.assert_allclose(p, softmax_of(1.25, 1.0))
    summed = SkillItMixer(graph_2x2, eta=0.5, window=3)
    summed.update({"a": 2.0, "b": 1.0})
    np.testing.assert_allclose(summed.update({"a": 1.0, "b": 3.0}), softmax_of(2.5, 2.0))
    assert make_mixer("skill_it", graph=graph_2x2, window_reduce="mean").reduce == "mean"


def test_observe_fills_the_window_without_moving_the_mixture(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=0.5, window=2)
    before = mixer.current
    mixer.observe({"a": 9.0, "b": 9.0})  # pushed out of the 2-evaluation window below
    mixer.observe({"a": 2.0, "b": 0.0})
    np.testing.assert_array_equal(mixer.current, before)
    assert mixer.round == 0
    p = mixer.update({"a": 0.0, "b": 4.0})
    # window = (2, 0) + (0, 4): exponents 0.5 * (2 + 0.5 * 4) = 2 and 0.5 * 4 = 2
    np.testing.assert_allclose(p, softmax_of(2.0, 2.0))
    assert mixer.round == 1


def test_state_keeps_the_reduction(graph_2x2):
    mixer = SkillItMixer(graph_2x2, window=3, reduce="mean")
    mixer.update({"a": 1.0, "b": 2.0})
    state = mixer.state_dict()
    assert state["reduce"] == "mean"
    again = SkillItMixer(graph_2x2, window=3, reduce="mean")
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.current, mixer.current)
    with pytest.raises(ValueError, match="reduce='mean'"):
        SkillItMixer(graph_2x2, window=3).load_state_dict(state)
    older = {k: v for k, v in SkillItMixer(graph_2x2, window=3).state_dict().items() if k != "reduce"}
    SkillItMixer(graph_2x2, window=3).load_state_dict(older)  # checkpoints from before the option summed
    with pytest.raises(ValueError, match="reduce must be one of sum, mean"):
        SkillItMixer(graph_2x2, reduce="median")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"window_unit": "evaluations"}, "goes with skill_eval_steps"),
        ({"skill_eval_steps": 2}, "goes with skill_eval_steps"),
        ({"window_unit": "evaluations", "skill_eval_steps": 3}, "divisor of the 4 steps of a round"),
        ({"window_unit": "checkpoints", "skill_eval_steps": 2}, "window_unit must be"),
        ({"window_reduce": "max"}, "window_reduce must be"),
    ],
)
def test_config_checks_the_window_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkillItConfig(output_dir=str(tmp_path), max_steps=8, rounds=2, use_cpu=True, report_to="none", **kwargs)


def test_trainer_feeds_evaluations_inside_rounds_to_the_window(tokenizer, tiny_model, skills, make_config):
    args = make_config(
        max_steps=8,
        rounds=2,
        eta=0.5,
        window=3,
        window_unit="evaluations",
        skill_eval_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        seed=42,  # TrainingArguments' default, as before the shared config
    )
    graph = SkillsGraph([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]], ["1", "2", "3"])
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, graph=graph, processing_class=tokenizer)
    seen = []  # (step, kind, losses) as the mixer receives them
    observe, update = trainer.mixer.observe, trainer.mixer.update

    def spy_observe(losses):
        seen.append((trainer.state.global_step, "observe", dict(losses)))
        return observe(losses)

    def spy_update(losses):
        seen.append((trainer.state.global_step, "update", dict(losses)))
        return update(losses)

    trainer.mixer.observe, trainer.mixer.update = spy_observe, spy_update
    trainer.train()
    # Steps 2 and 6 are evaluations inside rounds, 4 ends round 1 (the last round's end updates nothing).
    assert [(step, kind) for step, kind, _ in seen] == [(2, "observe"), (4, "update"), (6, "observe")]
    window = sum(np.array([losses[s] for s in ("1", "2", "3")]) for _, _, losses in seen[:2])
    expected = softmax_of(*(0.5 * graph.matrix @ window))
    np.testing.assert_allclose(trainer.trajectory[1]["p"]["1"], expected[0], rtol=1e-9)
    np.testing.assert_allclose(list(trainer.trajectory[1]["p"].values()), expected, rtol=1e-9)


def test_evaluations_window_needs_a_mixer_with_a_window(tokenizer, tiny_model, skills, tmp_path):
    args = SkillItConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        rounds=2,
        mixing="stratified",
        window_unit="evaluations",
        skill_eval_steps=1,
        report_to="none",
        use_cpu=True,
    )
    with pytest.raises(ValueError, match="needs a mixer whose window holds evaluations"):
        SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
