import json
import logging

import numpy as np
import pytest
from conftest import softmax_of

from hf_skillit import FixedMixer, Mixer, make_mixer
from hf_skillit.graph import SkillsGraph
from hf_skillit.mixer_registry import check_mixer_inputs, mixer_class, mixer_names
from hf_skillit.mixing import ProportionalMixer, SkillItMixer, StaticMixer, StratifiedMixer


@pytest.fixture
def graph_3x2():
    return SkillsGraph([[0.2, 0.0], [1.0, 0.5], [0.0, 2.0]], ["a", "b", "c"], ["x", "y"])


def test_skill_it_2x2_window_2(graph_2x2):
    mixer = SkillItMixer(graph_2x2, eta=0.5, window=2)
    # p_1 ∝ exp(0.5 * row sums) = exp(0.5 * [1.5, 1])
    np.testing.assert_allclose(mixer.initial(), softmax_of(0.75, 0.5))
    # L_1 = [2, 1]: A L_1 = [1*2 + 0.5*1, 0*2 + 1*1] = [2.5, 1]
    np.testing.assert_allclose(mixer.update([2.0, 1.0]), softmax_of(1.25, 0.5))
    # window {L_1, L_2 = [1, 3]}: sum = [3, 4]; A sum = [3 + 2, 4] = [5, 4]
    np.testing.assert_allclose(mixer.update([1.0, 3.0]), softmax_of(2.5, 2.0))
    # L_1 drops out: {L_2, L_3 = [0.5, 0.5]}: sum = [1.5, 3.5]; A sum = [1.5 + 1.75, 3.5] = [3.25, 3.5]
    np.testing.assert_allclose(mixer.update([0.5, 0.5]), softmax_of(1.625, 1.75))
    assert mixer.round == 3
    np.testing.assert_allclose(mixer.initial(), softmax_of(0.75, 0.5))  # p_1 stays available


LOSSES_3X2 = [[1.0, 2.0], [3.0, 1.0], [2.0, 2.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("window", "exponents"),
    [
        # A L for L_1..L_4: [0.2, 2, 4], [0.6, 3.5, 2], [0.4, 3, 4], [0.2, 1, 0]
        (1, [[0.2, 2.0, 4.0], [0.6, 3.5, 2.0], [0.4, 3.0, 4.0], [0.2, 1.0, 0.0]]),
        # pairwise sums of the above
        (2, [[0.2, 2.0, 4.0], [0.8, 5.5, 6.0], [1.0, 6.5, 6.0], [0.6, 4.0, 4.0]]),
        # sums of up to three: L_1..L_3 = [1.2, 8.5, 10]; L_2..L_4 = [1.2, 7.5, 6]
        (3, [[0.2, 2.0, 4.0], [0.8, 5.5, 6.0], [1.2, 8.5, 10.0], [1.2, 7.5, 6.0]]),
    ],
)
@pytest.mark.parametrize("eta", [1.0, 0.1, 2.5])
def test_skill_it_3x2_windows(graph_3x2, window, exponents, eta):
    mixer = SkillItMixer(graph_3x2, eta=eta, window=window)
    # row sums [0.2, 1.5, 2]
    np.testing.assert_allclose(mixer.initial(), softmax_of(eta * 0.2, eta * 1.5, eta * 2.0))
    for losses, expected in zip(LOSSES_3X2, exponents, strict=True):
        p = mixer.update(losses)
        np.testing.assert_allclose(p, softmax_of(*(eta * e for e in expected)), rtol=1e-12)
        assert p.dtype == np.float64 and p.sum() == pytest.approx(1.0)


def test_losses_as_mapping(graph_3x2):
    by_name, by_position = SkillItMixer(graph_3x2), SkillItMixer(graph_3x2)
    np.testing.assert_array_equal(by_name.update({"y": 2.0, "x": 1.0}), by_position.update([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"missing \['y'\], unknown \['z'\]"):
        by_name.update({"x": 1.0, "z": 2.0})


def test_complete_graph_is_uniform():
    mixer = SkillItMixer(SkillsGraph.complete(["a", "b", "c"], ["x", "y"]), eta=3.0, window=2)
    np.testing.assert_allclose(mixer.initial(), np.full(3, 1 / 3))
    for losses in ([9.0, 0.1], [0.0, 5.0], [100.0, 3.0]):
        np.testing.assert_allclose(mixer.update(losses), np.full(3, 1 / 3))


def test_identity_graph_weights_by_own_windowed_loss():
    mixer = SkillItMixer(SkillsGraph.identity(["a", "b", "c"]), eta=0.7, window=2)
    np.testing.assert_allclose(mixer.initial(), np.full(3, 1 / 3))
    mixer.update([1.0, 2.0, 3.0])
    np.testing.assert_allclose(mixer.update([0.5, 0.0, 4.0]), softmax_of(0.7 * 1.5, 0.7 * 2.0, 0.7 * 7.0))
    np.testing.assert_allclose(mixer.update([1.0, 1.0, 1.0]), softmax_of(0.7 * 1.5, 0.7 * 1.0, 0.7 * 5.0))


def test_large_rectangular_graph():
    rng = np.random.default_rng(0)
    graph = SkillsGraph(rng.normal(size=(59, 12)), [f"t{i}" for i in range(59)], [f"e{j}" for j in range(12)])
    mixer = SkillItMixer(graph)
    for _ in range(5):
        p = mixer.update(rng.uniform(0, 5, size=12))
        assert p.shape == (59,)
        assert (p >= 0).all() and p.sum() == pytest.approx(1.0)


def test_extreme_losses_stay_finite(graph_3x2):
    mixer = SkillItMixer(graph_3x2, eta=10.0, window=3)
    for _ in range(4):
        p = mixer.update([1e4, 1e4])
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    # exponents 10 * 3e4 * [0.2, 1.5, 2]: all weight on c
    np.testing.assert_allclose(p, [0.0, 0.0, 1.0])


def test_state_round_trip_is_exact(graph_3x2):
    losses = [[1.0, 2.5], [0.3, 1.7], [2.2, 0.9], [1.1, 1.3], [0.7, 0.4], [3.1, 2.9]]
    uninterrupted = SkillItMixer(graph_3x2, eta=0.37, window=2)
    expected = [uninterrupted.update(loss) for loss in losses]

    first = SkillItMixer(graph_3x2, eta=0.37, window=2)
    for loss in losses[:3]:
        first.update(loss)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = SkillItMixer(graph_3x2, eta=0.37, window=2)
    resumed.load_state_dict(state)
    assert resumed.round == 3
    np.testing.assert_array_equal(resumed.current, expected[2])
    for loss, p in zip(losses[3:], expected[3:], strict=True):
        np.testing.assert_array_equal(resumed.update(loss), p)


def test_state_from_another_configuration_is_rejected(graph_3x2, graph_2x2):
    state = SkillItMixer(graph_3x2, eta=0.5, window=2).state_dict()
    with pytest.raises(ValueError, match="window=2, this mixer has 3"):
        SkillItMixer(graph_3x2, eta=0.5, window=3).load_state_dict(state)
    with pytest.raises(ValueError, match="train_skills"):
        SkillItMixer(graph_2x2, eta=0.5, window=2).load_state_dict(state)
    with pytest.raises(ValueError, match="mixer='skill_it', this mixer has 'static'"):
        StaticMixer(graph_3x2).load_state_dict(state)


def test_non_finite_losses_are_skipped(graph_3x2, caplog):
    mixer, clean = SkillItMixer(graph_3x2, window=2), SkillItMixer(graph_3x2, window=2)
    for loss in ([1.0, 2.0], [0.5, 0.5]):
        mixer.update(loss)
        clean.update(loss)
    before = mixer.state_dict()
    with caplog.at_level(logging.WARNING, logger="hf_skillit.mixing"):
        with pytest.warns(RuntimeWarning, match=r"'y': nan"):
            p = mixer.update([1.0, float("nan")])
        with pytest.warns(RuntimeWarning, match=r"'x': inf"):
            mixer.update({"x": float("inf"), "y": 1.0})
    assert "'y': nan" in caplog.text
    np.testing.assert_array_equal(p, clean.current)
    assert mixer.state_dict() == before
    np.testing.assert_array_equal(mixer.update([2.0, 1.0]), clean.update([2.0, 1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eta": 0.0}, "eta must be a finite number > 0, got 0.0"),
        ({"eta": -1.0}, "eta must be .* got -1.0"),
        ({"eta": float("nan")}, "eta must be .* got nan"),
        ({"eta": float("inf")}, "eta must be .* got inf"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
        ({"window": 1.5}, "window must be .* got 1.5"),
    ],
)
def test_invalid_parameters(graph_2x2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkillItMixer(graph_2x2, **kwargs)


def test_wrong_number_of_losses(graph_3x2):
    with pytest.raises(ValueError, match=r"expected 2 losses .* got 3"):
        SkillItMixer(graph_3x2).update([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"expected 2 losses .* got 1"):
        StaticMixer(graph_3x2).update([1.0])


def test_static(graph_3x2):
    mixer = StaticMixer(graph_3x2, eta=2.0)
    p1 = softmax_of(2.0 * 0.2, 2.0 * 1.5, 2.0 * 2.0)
    np.testing.assert_allclose(mixer.initial(), p1)
    for losses in ([5.0, 0.1], [0.0, 9.0]):
        np.testing.assert_allclose(mixer.update(losses), p1)
    assert mixer.round == 2
    resumed = StaticMixer(graph_3x2, eta=2.0)
    resumed.load_state_dict(json.loads(json.dumps(mixer.state_dict())))
    assert resumed.round == 2


def test_stratified_continual_pretraining():
    # Zero rows do not matter: every training skill is relevant when evaluation = training skills.
    graph = SkillsGraph([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], ["a", "b", "c"])
    mixer = StratifiedMixer(graph)
    np.testing.assert_allclose(mixer.initial(), np.full(3, 1 / 3))
    assert mixer.eval_skills == ()
    np.testing.assert_allclose(mixer.update([1.0, 2.0, 3.0, 4.0]), np.full(3, 1 / 3))  # losses ignored
    np.testing.assert_allclose(StratifiedMixer.from_skills(["a", "b"]).initial(), [0.5, 0.5])


def test_stratified_fine_tuning():
    graph = SkillsGraph(
        # column c: a -> c positive (prerequisite), b -> c negative (not one), d -> c zero
        [[1.0, 0.0, 0.4, 0.0], [0.0, 1.0, -0.3, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.9, 0.0, 1.0]],
        ["a", "b", "c", "d"],
    )
    np.testing.assert_allclose(StratifiedMixer(graph.restrict(["c"])).initial(), [0.5, 0.0, 0.5, 0.0])
    # targets {b, c} with prerequisites {d} (-> b) and {a} (-> c)
    np.testing.assert_allclose(StratifiedMixer(graph.restrict(["b", "c"])).initial(), [0.25, 0.25, 0.25, 0.25])


def test_stratified_out_of_domain():
    graph = SkillsGraph([[0.0, 1.0], [-0.5, 0.0], [0.3, 0.0]], ["a", "b", "c"], ["x", "y"])
    np.testing.assert_allclose(StratifiedMixer(graph).initial(), [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"no training skill has a positive edge into the evaluation skills \['x'\]"):
        StratifiedMixer(SkillsGraph([[0.0], [-1.0]], ["a", "b"], ["x"]))


def test_stratified_partial_overlap_is_fine_tuning():
    # evaluation skills {c, x}: c is trainable, x is not; b is a prerequisite of c.
    graph = SkillsGraph([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], ["a", "b", "c"], ["c", "x"])
    np.testing.assert_allclose(StratifiedMixer(graph).initial(), [0.0, 0.5, 0.5])


def test_proportional():
    mixer = ProportionalMixer({"a": 10, "b": 30, "c": 60})
    assert mixer.train_skills == ("a", "b", "c") and mixer.eval_skills == ()
    np.testing.assert_allclose(mixer.initial(), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(mixer.update([]), [0.1, 0.3, 0.6])
    for size in (0, -3, None, 2.5):
        with pytest.raises(ValueError, match=f"skill 'b' has size {size!r}"):
            ProportionalMixer({"a": 10, "b": size})


def test_fixed_weights():
    mixer = FixedMixer(["a", "b", "c"], weights={"c": 3.0, "a": 1.0})
    np.testing.assert_allclose(mixer.initial(), [0.25, 0.0, 0.75])
    np.testing.assert_allclose(mixer.update(None), [0.25, 0.0, 0.75])
    np.testing.assert_allclose(FixedMixer(["a", "b"], weights=[1, 4]).initial(), [0.2, 0.8])


def test_fixed_schedule_beyond_its_end():
    schedule = [[1.0, 0.0], {"b": 1.0}, [1.0, 3.0]]
    mixer = FixedMixer(["a", "b"], schedule=schedule)
    rounds = [mixer.initial()] + [mixer.update([]) for _ in range(4)]
    np.testing.assert_allclose(rounds, [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75], [0.25, 0.75], [0.25, 0.75]])


def test_fixed_schedule_resumes_at_its_round():
    schedule = [[1.0, 0.0], {"b": 1.0}, [1.0, 3.0]]
    mixer = FixedMixer(["a", "b"], schedule=schedule)
    mixer.update([])
    resumed = FixedMixer(["a", "b"], schedule=schedule)
    resumed.load_state_dict(json.loads(json.dumps(mixer.state_dict())))
    np.testing.assert_allclose(resumed.current, [0.0, 1.0])
    np.testing.assert_allclose(resumed.update([]), [0.25, 0.75])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {"a": -1.0}}, r"weights: weight of skill 'a' is -1.0"),
        ({"weights": [1.0, float("nan")]}, r"weight of skill 'b' is nan"),
        ({"weights": [0.0, 0.0]}, "weights: all weights are zero"),
        ({"weights": [1.0]}, r"expected 2 weights .* got 1"),
        ({"weights": {"q": 1.0}}, r"unknown skills \['q'\]"),
        ({"schedule": [[1.0, 0.0], [1.0, -2.0]]}, r"schedule\[1\]: weight of skill 'b' is -2.0"),
        ({"schedule": []}, "non-empty list"),
        ({}, "exactly one of weights and schedule"),
        ({"weights": [1.0, 1.0], "schedule": [[1.0, 1.0]]}, "exactly one of weights and schedule"),
    ],
)
def test_fixed_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedMixer(["a", "b"], **kwargs)


def test_all_mixers_satisfy_the_protocol(graph_3x2):
    for name in [n for n in mixer_names() if mixer_class(n).__module__ == "hf_skillit.mixing"]:
        mixer = make_mixer(name, graph=graph_3x2, train_sizes={"a": 1, "b": 2, "c": 3}, fixed_weights=[1, 1, 1])
        assert isinstance(mixer, Mixer)
        assert mixer.train_skills == ("a", "b", "c")
        json.dumps(mixer.state_dict())


def test_make_mixer(graph_3x2):
    skill_it = make_mixer("skill_it", graph=graph_3x2, eta=0.2, window=1)
    assert isinstance(skill_it, SkillItMixer) and (skill_it.eta, skill_it.window) == (0.2, 1)
    assert isinstance(make_mixer("static", graph=graph_3x2), StaticMixer)
    random = make_mixer("random", graph=graph_3x2, train_sizes={"c": 2, "a": 1, "b": 1})
    np.testing.assert_allclose(random.initial(), [0.25, 0.25, 0.5])
    schedule = make_mixer("fixed", graph=graph_3x2, fixed_weights=[{"a": 1.0}, {"b": 1.0}])
    np.testing.assert_allclose(schedule.update([]), [0.0, 1.0, 0.0])


def test_make_mixer_fine_tuning_targets():
    graph = SkillsGraph([[1.0, 0.0, 0.4], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], ["a", "b", "c"])
    skill_it = make_mixer("skill_it", graph=graph, eta=1.0, target_skills=["c"])
    assert skill_it.eval_skills == ("c",)
    np.testing.assert_allclose(skill_it.initial(), softmax_of(0.4, 0.0, 1.0))
    np.testing.assert_allclose(make_mixer("stratified", graph=graph, target_skills=["c"]).initial(), [0.5, 0.0, 0.5])
    no_graph = make_mixer("no_graph", graph=graph, eta=1.0, target_skills=["c"])
    np.testing.assert_allclose(no_graph.update([2.0]), softmax_of(0.0, 0.0, 2.0))
    with pytest.raises(ValueError, match=r"unknown evaluation skills \['zz'\]"):
        make_mixer("skill_it", graph=graph, target_skills=["zz"])


def test_make_mixer_no_graph_is_identity(graph_3x2):
    mixer = make_mixer("no_graph", graph=graph_3x2, eta=0.5, window=2)
    assert mixer.eval_skills == ("a", "b", "c")
    np.testing.assert_allclose(mixer.update([1.0, 2.0, 4.0]), softmax_of(0.5, 1.0, 2.0))


def test_make_mixer_errors(graph_3x2):
    with pytest.raises(ValueError, match=r"unknown mixer 'skillit'; valid names: \['skill_it', 'static'"):
        make_mixer("skillit", graph=graph_3x2)
    with pytest.raises(ValueError, match="needs train_sizes"):
        make_mixer("random", graph=graph_3x2)
    with pytest.raises(ValueError, match="train_sizes must name"):
        make_mixer("random", graph=graph_3x2, train_sizes={"a": 1})
    with pytest.raises(ValueError, match="skill 'b' has size None"):
        make_mixer("random", graph=graph_3x2, train_sizes={"a": 1, "b": None, "c": 1})
    with pytest.raises(ValueError, match="needs fixed_weights"):
        make_mixer("fixed", graph=graph_3x2)


def test_make_mixer_checks_targets_as_the_trainer_does():
    # One rule (`check_mixer_inputs`): a target without a positive edge into it cannot move Skill-It's mixture, so a
    # mixer that needs the graph refuses it; a mixer that ignores the graph takes it.
    graph = SkillsGraph([[1.0, 0.0], [0.0, 0.0]], ["a", "b"])
    for name in ("skill_it", "static"):
        with pytest.raises(ValueError, match=r"target skill\(s\) 'b' have no positive entry"):
            make_mixer(name, graph=graph, target_skills=["b"])
        with pytest.raises(ValueError, match=r"target skill\(s\) 'b' have no positive entry"):
            check_mixer_inputs(name, graph, graph.train_skills, ["b"])
    np.testing.assert_allclose(make_mixer("stratified", graph=graph, target_skills=["b"]).initial(), [0.0, 1.0])
