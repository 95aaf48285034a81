"""The Aioli update (`hf_skillit.aioli`) against numbers worked out by hand, and its limiting cases.

The worked example (k = 2 skills, 2 sweeps, one_hot_factor ε = 0.75, eta = 0.5), losses chosen so every step is
exact in decimals:

    order          1, 0, 0, 1
    loss_0         [3.0, 2.0]
    after probe 1  [2.9, 1.8]   (skill 1)  decrease [0.1, 0.2]   -> column 1
    after probe 2  [2.6, 1.7]   (skill 0)  decrease [0.3, 0.1]   -> column 0
    after probe 3  [2.4, 1.65]  (skill 0)  decrease [0.2, 0.05]  -> column 0
    after probe 4  [2.35, 1.5]  (skill 1)  decrease [0.05, 0.15] -> column 1

    B = ([[0.5, 0.15], [0.15, 0.35]]) / 2 sweeps = [[0.25, 0.075], [0.075, 0.175]]

    W = [[0.75, 0.25], [0.25, 0.75]], det 0.5, inv(W) = [[1.5, -0.5], [-0.5, 1.5]]
    A = B inv(W):  row 0: [1.5*0.25 - 0.5*0.075, -0.5*0.25 + 1.5*0.075] = [0.3375, -0.0125]
                   row 1: [1.5*0.075 - 0.5*0.175, -0.5*0.075 + 1.5*0.175] = [0.025, 0.225]
    normalised:    + 0.0125 -> [[0.35, 0], [0.0375, 0.2375]], sum 0.625 -> [[0.56, 0], [0.06, 0.38]]
    column sums    [0.62, 0.38];  logits eta * colsum = [0.31, 0.19];  p_0 = 1 / (1 + e^-0.12)

A second round's estimate [[0.1, 0.2], [0.3, 0.4]] (already normalised, column sums [0.4, 0.6]):

    without ema:   logits [0.31, 0.19] + 0.5 [0.4, 0.6] = [0.51, 0.49]       p_0 = 1 / (1 + e^-0.02)
    ema γ = 0.5:   E = 0.5 A_2 + 0.5 A_1, column sums [0.51, 0.49],
                   logits [0.255, 0.245]                                       p_0 = 1 / (1 + e^-0.01)
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_skillit.aioli import (
    AioliUpdate,
    loss_decrease_matrix,
    normalize_mixing_law,
    probe_mixtures,
    probe_order,
    solve_mixing_law,
)

ORDER = [1, 0, 0, 1]
LOSS_0 = [3.0, 2.0]
PROBE_LOSSES = [[2.9, 1.8], [2.6, 1.7], [2.4, 1.65], [2.35, 1.5]]
B = np.array([[0.25, 0.075], [0.075, 0.175]])
A_RAW = np.array([[0.3375, -0.0125], [0.025, 0.225]])
A_NORMALISED = np.array([[0.56, 0.0], [0.06, 0.38]])
A_2 = np.array([[0.1, 0.2], [0.3, 0.4]])


def two_skill_p(logit_gap: float) -> np.ndarray:
    p0 = 1 / (1 + math.exp(-logit_gap))
    return np.array([p0, 1 - p0])


def test_probe_mixtures_put_the_factor_on_their_skill():
    np.testing.assert_allclose(probe_mixtures(2, 0.75), [[0.75, 0.25], [0.25, 0.75]])
    w = probe_mixtures(3, 0.5)
    np.testing.assert_allclose(w, [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(probe_mixtures(4, 1), np.eye(4))


@pytest.mark.parametrize("factor", [0.5, 1 / 3, 0.2, 1.5, 0, True, "0.7"])
def test_a_factor_that_makes_the_law_unsolvable_is_refused(factor):
    k = 2 if factor == 0.5 else 3
    with pytest.raises(ValueError, match="one_hot_factor"):
        probe_mixtures(k, factor)


def test_a_single_skill_is_refused():
    with pytest.raises(ValueError, match="at least 2 training skills"):
        probe_mixtures(1, 1.0)


def test_probe_order_is_sweeps_permutations_and_seeded():
    order = probe_order(3, 4, np.random.default_rng(7))
    assert len(order) == 12
    for sweep in order.reshape(4, 3):
        assert sorted(sweep.tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(order, probe_order(3, 4, np.random.default_rng(7)))
    with pytest.raises(ValueError, match="sweeps"):
        probe_order(3, 0, np.random.default_rng(0))


def test_loss_decrease_matrix_by_hand():
    np.testing.assert_allclose(loss_decrease_matrix(ORDER, LOSS_0, PROBE_LOSSES, k=2), B, atol=1e-12)


def test_loss_decrease_matrix_refuses_unequal_probes_and_bad_losses():
    with pytest.raises(ValueError, match="same number of times"):
        loss_decrease_matrix([0, 0, 1], LOSS_0, PROBE_LOSSES[:3], k=2)
    with pytest.raises(ValueError, match="same number of times"):
        loss_decrease_matrix([0, 0], LOSS_0, PROBE_LOSSES[:2], k=2)
    with pytest.raises(ValueError, match="one per probe"):
        loss_decrease_matrix(ORDER, LOSS_0, PROBE_LOSSES[:3], k=2)
    with pytest.raises(ValueError, match="finite"):
        loss_decrease_matrix(ORDER, LOSS_0, [*PROBE_LOSSES[:3], [float("nan"), 1.0]], k=2)


def test_solve_by_hand():
    np.testing.assert_allclose(solve_mixing_law(B, 0.75), A_RAW, atol=1e-12)


def test_solve_recovers_a_law_that_holds_exactly():
    """Limiting case: losses that follow the law B = A W^T exactly give A back, here with 3 validation skills
    and 4 training skills (the validation skills need not be the training skills)."""
    true = np.random.default_rng(0).uniform(-0.1, 0.5, size=(3, 4))
    decrease = true @ probe_mixtures(4, 0.55).T
    np.testing.assert_allclose(solve_mixing_law(decrease, 0.55), true, atol=1e-12)


def test_one_hot_probes_measure_a_directly_and_diagonal_keeps_the_diagonal():
    np.testing.assert_array_equal(solve_mixing_law(B, 1.0), B)
    # As in the authors' code, diagonal applies only to smoothed probes: one-hot probes keep the full matrix.
    np.testing.assert_array_equal(solve_mixing_law(B, 1.0, diagonal=True), B)
    np.testing.assert_allclose(solve_mixing_law(B, 0.75, diagonal=True), np.diag([0.25 / 0.75, 0.175 / 0.75]))


def test_normalize_by_hand_and_its_limits():
    np.testing.assert_allclose(normalize_mixing_law(A_RAW), A_NORMALISED, atol=1e-12)
    np.testing.assert_allclose(normalize_mixing_law(A_2), A_2)  # non-negative, sums to 1: unchanged
    np.testing.assert_array_equal(normalize_mixing_law(np.zeros((2, 2))), np.zeros((2, 2)))


def test_first_round_mixture_by_hand():
    update = AioliUpdate(2, eta=0.5)
    np.testing.assert_allclose(update.mixture(), [0.5, 0.5])
    np.testing.assert_allclose(update.step(A_RAW), two_skill_p(0.12), atol=1e-12)


def test_without_ema_the_rounds_accumulate():
    update = AioliUpdate(2, eta=0.5)
    update.step(A_RAW)
    np.testing.assert_allclose(update.step(A_2), two_skill_p(0.02), atol=1e-12)


def test_with_ema_the_mixture_restarts_from_uniform_on_the_smoothed_law():
    update = AioliUpdate(2, eta=0.5, ema=0.5)
    np.testing.assert_allclose(update.step(A_RAW), two_skill_p(0.12), atol=1e-12)
    np.testing.assert_allclose(update.step(A_2), two_skill_p(0.01), atol=1e-12)


def test_a_zero_law_leaves_the_mixture():
    update = AioliUpdate(2, eta=0.5)
    first = update.step(A_RAW)
    np.testing.assert_allclose(update.step(np.zeros((2, 2))), first)


def test_without_normalisation_eta_acts_on_the_raw_column_sums():
    update = AioliUpdate(2, eta=0.5, normalize=False)
    # column sums of A_RAW: [0.3625, 0.2125]; logit gap 0.5 * 0.15 = 0.075
    np.testing.assert_allclose(update.step(A_RAW), two_skill_p(0.075), atol=1e-12)


def test_state_round_trips_through_json():
    for ema in (None, 0.3):
        update = AioliUpdate(2, eta=0.5, ema=ema)
        update.step(A_RAW)
        restored = AioliUpdate(2, eta=0.5, ema=ema)
        restored.load_state_dict(json.loads(json.dumps(update.state_dict())))
        np.testing.assert_array_equal(restored.step(A_2), update.step(A_2))


@pytest.mark.parametrize(("eta", "ema"), [(0, None), (float("inf"), None), (0.5, 1.0), (0.5, -0.1), (0.5, True)])
def test_bad_settings_are_refused(eta, ema):
    with pytest.raises(ValueError, match="eta|ema"):
        AioliUpdate(2, eta=eta, ema=ema)


def test_a_matrix_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="2 columns"):
        AioliUpdate(2, eta=0.5).step(np.ones((2, 3)))


# ----- AioliMixer without a trainer: the worked example through the mixer's protocol ---------------------------------


def test_mixer_runs_the_worked_example_and_checkpoints_mid_round():
    from hf_skillit.aioli import AioliMixer

    mixer = AioliMixer(["a", "b"], ["a", "b"], eta=0.5, probe_steps=3, sweeps=2, one_hot_factor=0.75, seed=3)
    assert mixer.initial().tolist() == [0.5, 0.5]
    mixer.set_initial_losses({"a": 3.0, "b": 2.0})
    probes = mixer.probes(0)
    assert [p.steps for p in probes] == [3] * 4 and sorted(p.label for p in probes) == ["a", "a", "b", "b"]
    assert mixer.probes(0)[0].label == probes[0].label, "the order is a function of (seed, round)"
    # The worked example's losses, in the order the mixer chose: each probe's decrease goes to its skill's column.
    after = {"b": [[2.9, 1.8], [2.35, 1.5]], "a": [[2.6, 1.7], [2.4, 1.65]]}
    assert [p.label for p in probes] == ["b", "a", "a", "b"], "seed 3 gives the worked example's order 1, 0, 0, 1"
    losses = [after["b"][0], after["a"][0], after["a"][1], after["b"][1]]
    mixer.observe_probe(0, dict(zip("ab", losses[0], strict=True)))
    saved = json.loads(json.dumps(mixer.state_dict()))
    resumed = AioliMixer(["a", "b"], ["a", "b"], eta=0.5, probe_steps=3, sweeps=2, one_hot_factor=0.75, seed=3)
    resumed.load_state_dict(saved)
    for m in (mixer, resumed):
        for i, row in enumerate(losses[1:], start=1):
            m.observe_probe(i, dict(zip("ab", row, strict=True)))
    p, q = mixer.after_probes(), resumed.after_probes()
    assert p[0] == pytest.approx(1 / (1 + np.exp(-0.12)), abs=1e-12) and q.tolist() == p.tolist()
    law = mixer.round_record()["A"]  # training skill -> evaluation skill: the transpose of the example's A
    np.testing.assert_allclose([[law[t][e] for e in "ab"] for t in "ab"], [[0.3375, 0.025], [-0.0125, 0.225]])
    assert mixer.update({"a": 2.3, "b": 1.4}).tolist() == p.tolist(), "p stays until the next round's probes"
    with pytest.raises(ValueError, match="AioliMixer state has sweeps=2, this mixer has 1"):
        AioliMixer(["a", "b"], ["a", "b"], eta=0.5, probe_steps=3, sweeps=1, one_hot_factor=0.75).load_state_dict(
            saved
        )


def test_mixer_keeps_p_when_a_loss_around_the_probes_is_not_finite():
    from hf_skillit.aioli import AioliMixer

    mixer = AioliMixer(["a", "b"], ["a", "b"], eta=0.5, probe_steps=1)
    mixer.set_initial_losses([3.0, 2.0])
    mixer.probes(0)
    mixer.observe_probe(0, [float("nan"), 1.0])
    with pytest.raises(ValueError, match="probe 0 observed after 1 probes"):
        mixer.observe_probe(0, [1.0, 1.0])
    mixer.observe_probe(1, [2.0, 1.0])
    with pytest.warns(RuntimeWarning, match="non-finite validation losses"):
        assert mixer.after_probes().tolist() == [0.5, 0.5]
    assert mixer.round_record() == {}
