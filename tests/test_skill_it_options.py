"""Skill-It options beyond the paper (issue 23): losses normalised by their value before training (the reference
code's `normalize_loss`), and a mixture smoothed towards uniform over the relevant skills. Each is checked against
a hand computation of the update, through the trainer, and across a checkpoint and resume."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import StopAt, skillit_trainer, softmax_of

from hf_skillit import SkillItConfig, SkillItTrainer
from hf_skillit.graph import SkillsGraph
from hf_skillit.mixing import SkillItMixer, make_mixer

SKILLS = ["1", "2", "3"]
GRAPH_3 = [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]


# ----- the update, by hand ----------------------------------------------------------------------------------------


def test_initial_normalisation_divides_each_loss_by_its_loss_before_training(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=0.5, window=2, loss_normalization="initial")
    p_1 = mixer.initial()
    np.testing.assert_allclose(p_1, softmax_of(0.5 * 1.5, 0.5 * 1.0))  # p_1 does not read losses
    mixer.set_initial_losses({"a": 4.0, "b": 2.0})
    p_2 = mixer.update({"a": 2.0, "b": 2.0})
    # relative losses (0.5, 1.0): exponents 0.5 * (0.5 + 0.5 * 1.0) = 0.5 and 0.5 * 1.0 = 0.5
    np.testing.assert_allclose(p_2, softmax_of(0.5, 0.5))
    p_3 = mixer.update({"a": 1.0, "b": 0.5})
    # window (0.5, 1.0) + (0.25, 0.25) = (0.75, 1.25): exponents 0.5 * (0.75 + 0.625) and 0.5 * 1.25
    np.testing.assert_allclose(p_3, softmax_of(0.6875, 0.625))
    p_4 = mixer.update({"a": 4.0, "b": 2.0})  # (0.5, 1.0) leaves the 2-round window
    np.testing.assert_allclose(p_4, softmax_of(0.5 * (1.25 + 0.5 * 1.25), 0.5 * 1.25))


def test_normalised_mixture_does_not_depend_on_the_loss_scale(graph_2x2):
    losses = [{"a": 2.0, "b": 1.5}, {"a": 1.0, "b": 1.2}, {"a": 0.4, "b": 1.1}]
    mixtures = []
    for scale in (1.0, 7.3):  # e.g. nats against a task's per-token NLL ten times larger
        mixer = SkillItMixer(graph_2x2, eta=2.0, window=3, loss_normalization="initial")
        mixer.set_initial_losses({"a": 2.5 * scale, "b": 1.8 * scale})
        mixtures.append([mixer.update({s: v * scale for s, v in round_.items()}) for round_ in losses])
    np.testing.assert_allclose(mixtures[0], mixtures[1], rtol=1e-12)
    plain = [SkillItMixer(graph_2x2, eta=2.0, window=3) for _ in range(2)]
    raw = [
        np.asarray([m.update({s: v * k for s, v in r.items()}) for r in losses])
        for m, k in zip(plain, (1.0, 7.3), strict=True)
    ]
    assert raw[0].min() > 0.03 and raw[1].min() < 1e-7  # the paper's rule starves skill b on the larger scale


def test_without_initial_losses_the_first_update_is_the_reference(graph_2x2):
    """A mixer used alone (no trainer to measure round 0) divides by its first round's losses: round 1's relative
    losses are all 1, so p_2 = p_1 (the window holds one round of ones, A 1 = the row sums)."""
    mixer = SkillItMixer(graph_2x2, eta=1.0, window=3, loss_normalization="initial")
    np.testing.assert_allclose(mixer.update({"a": 3.0, "b": 0.7}), mixer.initial(), rtol=1e-12)
    p_3 = mixer.update({"a": 1.5, "b": 0.7})  # window (1, 1) + (0.5, 1)
    np.testing.assert_allclose(p_3, softmax_of(1.5 + 0.5 * 2, 2.0))


def test_initial_losses_must_be_positive_and_finite(graph_2x2):
    mixer = SkillItMixer(graph_2x2, loss_normalization="initial")
    with pytest.raises(ValueError, match=r"must be finite and > 0: \{'b': 0.0\}"):
        mixer.set_initial_losses({"a": 1.0, "b": 0.0})
    with pytest.raises(ValueError, match="missing"):
        mixer.set_initial_losses({"a": 1.0})
    plain = SkillItMixer(graph_2x2)
    plain.set_initial_losses({"a": 1.0, "b": 0.0})  # the paper's rule ignores them
    assert not plain.wants_initial_losses


def test_smoothing_mixes_every_mixture_with_uniform(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=4.0, window=1, mixture_smoothing=0.2)
    np.testing.assert_allclose(mixer.initial(), 0.8 * softmax_of(4 * 1.5, 4 * 1.0) + 0.1)
    p_2 = mixer.update({"a": 0.0, "b": 3.0})  # exponents 4 * 1.5 and 4 * 3
    np.testing.assert_allclose(p_2, 0.8 * softmax_of(6.0, 12.0) + 0.1)
    assert p_2.min() >= 0.2 / 2 - 1e-15  # the floor c / |support|
    assert np.isclose(p_2.sum(), 1.0)


def test_smoothing_is_uniform_over_the_relevant_skills_only():
    """Out of domain (training and evaluation skills disjoint), u covers the prerequisites of the evaluation skills:
    a source with no positive edge into them gets the Skill-It weight alone, as in skill-stratified sampling."""
    graph = SkillsGraph([[0.4, 0.0], [0.0, 0.1], [-1.0, -0.7]], ["python", "man", "licenses"], ["doc", "manpage"])
    mixer = SkillItMixer(graph, eta=2.0, mixture_smoothing=0.5)
    p = softmax_of(0.8, 0.2, -3.4)
    np.testing.assert_allclose(mixer.initial(), 0.5 * p + 0.5 * np.array([0.5, 0.5, 0.0]))
    stratified = make_mixer("stratified", graph=graph).initial()
    np.testing.assert_array_equal(stratified, [0.5, 0.5, 0.0])


def test_options_combine_normalise_then_smooth(graph_2x2):
    mixer = make_mixer(
        "skill_it", graph=graph_2x2, eta=1.0, window=3, loss_normalization="initial", mixture_smoothing=0.5
    )
    mixer.set_initial_losses([2.0, 4.0])
    p = mixer.update([1.0, 1.0])  # relative (0.5, 0.25): exponents 0.5 + 0.125 and 0.25
    np.testing.assert_allclose(p, 0.5 * softmax_of(0.625, 0.25) + 0.25)
    no_graph = make_mixer("no_graph", graph=graph_2x2, mixture_smoothing=0.3)
    assert no_graph.mixture_smoothing == 0.3


def test_defaults_are_the_papers_rule_and_keep_the_old_state(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=0.5, window=3)
    np.testing.assert_allclose(mixer.update({"a": 2.0, "b": 1.0}), softmax_of(0.5 * 2.5, 0.5 * 1.0), rtol=1e-12)
    assert not {"loss_normalization", "mixture_smoothing", "smoothing", "initial"} & set(mixer.state_dict())


# ----- state -------------------------------------------------------------------------------------------------------


def each_option_and_both(c: float):
    """Parametrize `options` over loss normalisation alone, smoothing `c` alone, and both."""
    cases = [
        {"loss_normalization": "initial"},
        {"mixture_smoothing": c},
        {"loss_normalization": "initial", "mixture_smoothing": c},
    ]
    return pytest.mark.parametrize("options", cases, ids=["normalised", "smoothed", "both"])


@each_option_and_both(0.25)
def test_state_round_trip_continues_the_same_mixtures(graph_2x2, options):
    rounds = [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 0.9}, {"a": 0.5, "b": 0.8}, {"a": 0.2, "b": 0.7}]
    whole = SkillItMixer(graph_2x2, eta=2.0, window=2, **options)
    whole.set_initial_losses({"a": 2.2, "b": 1.1})
    expected = [whole.update(r) for r in rounds]
    first = SkillItMixer(graph_2x2, eta=2.0, window=2, **options)
    first.set_initial_losses({"a": 2.2, "b": 1.1})
    first.update(rounds[0])
    first.update(rounds[1])
    resumed = SkillItMixer(graph_2x2, eta=2.0, window=2, **options)
    resumed.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(resumed.current, expected[1])
    np.testing.assert_array_equal([resumed.update(r) for r in rounds[2:]], expected[2:])


def test_state_refuses_other_options(graph_2x2):
    state = SkillItMixer(graph_2x2, mixture_smoothing=0.25).state_dict()
    with pytest.raises(ValueError, match="smoothing=0.25, this mixer has 0.0"):
        SkillItMixer(graph_2x2).load_state_dict(state)
    with pytest.raises(ValueError, match="loss_normalization='none', this mixer has 'initial'"):
        SkillItMixer(graph_2x2, loss_normalization="initial").load_state_dict(SkillItMixer(graph_2x2).state_dict())


def test_state_of_a_checkpoint_from_before_the_rename_loads(graph_2x2):
    # Checkpoints written before issue 24 named the option `smoothing` in the mixer's state; they still resume, into
    # the same mixtures, and still refuse a mixer with another value.
    rounds = [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 0.9}, {"a": 0.5, "b": 0.8}]
    first = SkillItMixer(graph_2x2, eta=2.0, window=2, mixture_smoothing=0.25)
    first.update(rounds[0])
    state = first.state_dict()
    old = {**{k: v for k, v in state.items() if k != "mixture_smoothing"}, "smoothing": 0.25}
    resumed = SkillItMixer(graph_2x2, eta=2.0, window=2, mixture_smoothing=0.25)
    resumed.load_state_dict(old)
    np.testing.assert_array_equal(resumed.current, first.current)
    np.testing.assert_array_equal(resumed.update(rounds[1]), first.update(rounds[1]))
    assert resumed.state_dict()["mixture_smoothing"] == 0.25 and "smoothing" not in resumed.state_dict()
    with pytest.raises(ValueError, match="mixture_smoothing=0.25, this mixer has 0.0"):
        SkillItMixer(graph_2x2, eta=2.0, window=2).load_state_dict(old)


# ----- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mixture_smoothing": 1.0}, r"mixture_smoothing must be a number in \[0, 1\), got 1.0"),
        ({"mixture_smoothing": -0.1}, r"mixture_smoothing must be a number in \[0, 1\)"),
        ({"loss_normalization": "chance"}, "loss_normalization must be one of none, initial, got 'chance'"),
        ({"mixing": "stratified", "mixture_smoothing": 0.1}, "mixing='stratified' would ignore them"),
        ({"mixing": "static", "loss_normalization": "initial"}, "mixing='static' would ignore them"),
    ],
)
def test_config_checks_the_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkillItConfig(output_dir=str(tmp_path), max_steps=8, rounds=2, use_cpu=True, report_to="none", **kwargs)


def test_smoothing_needs_a_relevant_skill():
    graph = SkillsGraph([[0.0], [-0.5]], ["x", "y"], ["task"])
    with pytest.raises(
        ValueError, match=r"no training skill has a positive edge into the evaluation skills \['task'\]"
    ):
        SkillItMixer(graph, mixture_smoothing=0.1)
    SkillItMixer(graph)  # the paper's rule has no support to compute


# ----- through the trainer -----------------------------------------------------------------------------------------


def test_trainer_measures_round_0_for_the_normalisation(tokenizer, tiny_model, skills, make_config):
    """Even with evaluate_skills_before_training=False, the trainer scores the skills before the first step and the
    mixer divides by those losses: p_2 is the hand computation from the trajectory's losses."""
    args = make_config(
        max_steps=6,
        rounds=3,
        eta=2.0,
        window=3,
        loss_normalization="initial",
        mixture_smoothing=0.1,
        evaluate_skills_before_training=False,
        learning_rate=1e-2,
    )
    graph = SkillsGraph(GRAPH_3, SKILLS)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, graph=graph, processing_class=tokenizer)
    trainer.train()
    first, second, third = trainer.trajectory
    initial = np.array([first["initial_eval_loss"][s] for s in SKILLS])
    window = np.array([first["eval_loss"][s] for s in SKILLS]) / initial
    expected = 0.9 * softmax_of(*(2.0 * graph.matrix @ window)) + 0.1 / 3
    np.testing.assert_allclose([second["p"][s] for s in SKILLS], expected, rtol=1e-9)
    window = window + np.array([second["eval_loss"][s] for s in SKILLS]) / initial
    expected = 0.9 * softmax_of(*(2.0 * graph.matrix @ window)) + 0.1 / 3
    np.testing.assert_allclose([third["p"][s] for s in SKILLS], expected, rtol=1e-9)


@pytest.mark.slow
@each_option_and_both(0.3)
def test_resume_mid_round_continues_the_identical_run(tmp_path, tokenizer, tiny_model, skills, options):
    """Stopped after step 7 (mid-round 2, checkpoint at 7), resumed: the same mixtures, counts and losses as the
    run that was never stopped."""

    def build(output_dir, callbacks=()):
        graph = SkillsGraph(GRAPH_3, SKILLS)
        settings = dict(rounds=4, max_steps=20, eta=3.0, window=2, learning_rate=1e-2, save_steps=7, **options)
        return skillit_trainer(
            output_dir, tokenizer, tiny_model(), skills, graph, callbacks, save_strategy="steps", **settings
        )

    whole = build(tmp_path / "whole")
    whole.train()
    whole = whole.trajectory
    cut = build(tmp_path / "cut", callbacks=[StopAt(7)])
    cut.train()
    assert cut.state.global_step == 7
    assert os.path.isfile(tmp_path / "cut" / "checkpoint-7" / "skillit_state.json")
    resumed = build(tmp_path / "cut")
    resumed.train(resume_from_checkpoint=True)
    # L_0 measured again at step 7 would change every later mixture: it must come from the checkpoint.
    assert resumed.trajectory == whole
    moved = max(abs(whole[-1]["p"][s] - whole[0]["p"][s]) for s in SKILLS)
    assert moved > 0.01, "the mixture must move for the comparison to mean anything"


# ----- hf-skillit train --dry-run --measure --------------------------------------------------------------------------


def _table(out: str, first: str) -> dict[str, list[float]]:
    """The rows of the printed table whose header starts with `first`: name -> numbers."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first)) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        name, *values = line.split()
        rows[name] = [float(v) for v in values]
    return rows


@pytest.mark.parametrize(
    "options", [[], ["training.loss_normalization=initial", "training.mixture_smoothing=0.3"]], ids=["paper", "both"]
)
def test_dry_run_measure_prints_the_mixtures_at_the_round_0_losses(tmp_path, capsys, options):
    import torch

    from hf_skillit.cli import main

    run_dir = tmp_path / "run"
    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "lego_pretrain.yaml")
    short = ["data.num_train_samples=300", "data.validation_per_skill=10", "model.tiny.hidden_size=32"]
    overrides = [*short, f"training.output_dir={run_dir}", "training.mixing=no_graph", "training.eta=4", *options]
    threads = torch.get_num_threads()
    try:
        assert main(["train", recipe, "--dry-run", "--measure", "--measure-rows", "4", "--set", *overrides]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "Measured before training (4 validation rows per skill" in out
    losses = np.array([row[0] for row in _table(out, "evaluation skill").values()])
    p_1, p_2, p_4 = np.array(list(_table(out, "training skill").values())).T
    # no_graph: the identity graph, p_1 uniform; window 3 (the recipe's), all rounds at the round-0 losses.
    if options:  # relative losses are all 1: the mixture stays at p_1 = uniform (smoothed uniform is uniform)
        assert "loss_normalization initial, mixture_smoothing 0.3 (p_1 included)" in out  # the plan's settings
        np.testing.assert_allclose([p_1, p_2, p_4], np.full((3, 3), 1 / 3), atol=1e-4)
    else:
        np.testing.assert_allclose(p_2, softmax_of(*(4 * losses)), atol=2e-3)
        np.testing.assert_allclose(p_4, softmax_of(*(4 * 3 * losses)), atol=2e-3)
    assert not run_dir.exists(), "a dry run writes nothing into the output directory"
    assert main(["train", recipe, "--measure", "--set", *overrides]) == 2
    assert "--measure goes with --dry-run" in capsys.readouterr().err
