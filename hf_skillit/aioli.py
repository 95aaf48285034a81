"""The Aioli update (Chen et al., arXiv 2411.05735): the mixing-law matrix estimated from probe phases, and the
mixture that follows from it. Pure numpy; no trainer, no mixer yet (docs/aioli.md says what is missing).

Each function is one step of a round of the authors' code (HazyResearch/aioli, `trainer/aioli_trainer.py`,
`learn_params_subroutine` and `train`), with their flag names in brackets:

- [`probe_mixtures`]: the probe mixtures, row j = weight `one_hot_factor` (ε) on skill j and (1 - ε)/(k - 1) on
  every other skill [`--one_hot_factor`].
- [`probe_order`]: the order of a round's probes, `sweeps` random permutations of the k skills [`--lp_rounds`].
- [`loss_decrease_matrix`]: B, where `B[i, j]` is the mean decrease of validation loss i over the probes on skill j,
  each probe's decrease measured from the evaluation before it (the previous probe's, or the round start's).
- [`solve_mixing_law`]: A with `B = A W^T` (W = the probe mixtures), row by row with `np.linalg.solve`; A = B for
  one-hot probes; `diagonal=True` keeps `B[i, i] / ε` only [`--aioli_diagonal`].
- [`normalize_mixing_law`]: shift A so its smallest entry is 0 if it is negative, then divide by the sum of all
  entries [`--aioli_normalize_A`].
- [`AioliUpdate`]: what is kept across rounds. `step(A)` normalises A, smooths it (`ema` = γ: E <- (1 - γ) A + γ E)
  [`--ema`] and returns p = softmax of eta times the column sums of A, accumulated over the rounds without `ema`
  (exponentiated gradient, p_t ∝ p_{t-1} exp(eta colsum A_t)) and from uniform every round with it (the code's
  `weights = weights_init * exp(eta * ema_graph.sum(axis=0))`) [`--eta`].

Orientation: as in the authors' code, rows of B and A are the validation (evaluation) skills and columns the
training skills, so a training skill's weight grows with its column sum, its total effect on every validation
loss. A `SkillsGraph` has training skills as rows: it is the transpose.

Two guards the authors' code does not have: `one_hot_factor` must lie in (1/k, 1] (at 1/k every probe is the
uniform mixture and W is singular; below it a probe favours the other skills), and an A that is zero after the
shift (no loss moved) normalises to zeros, leaving p where the update would otherwise divide by zero.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .mixing import check_eta

__all__ = [
    "AioliUpdate",
    "check_one_hot_factor",
    "loss_decrease_matrix",
    "normalize_mixing_law",
    "probe_mixtures",
    "probe_order",
    "solve_mixing_law",
]


def check_one_hot_factor(k: int, one_hot_factor: object) -> float:
    """`one_hot_factor` as a float; a ValueError unless k >= 2 and 1/k < one_hot_factor <= 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2:
        raise ValueError(f"Aioli mixes at least 2 training skills, got k={k!r}")
    factor = one_hot_factor
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 1 / k < factor <= 1:
        raise ValueError(
            f"one_hot_factor must be in (1/k, 1] = ({1 / k:.4g}, 1] for k={k} training skills (at 1/k every probe "
            f"is the uniform mixture and the mixing law cannot be solved), got {one_hot_factor!r}"
        )
    return float(factor)


def probe_mixtures(k: int, one_hot_factor: float) -> np.ndarray:
    """The k x k matrix W whose row j is the mixture of the probe on skill j."""
    factor = check_one_hot_factor(k, one_hot_factor)
    mixtures = np.full((k, k), (1 - factor) / (k - 1))
    np.fill_diagonal(mixtures, factor)
    return mixtures


def probe_order(k: int, sweeps: int, rng: np.random.Generator) -> np.ndarray:
    """The skills probed in one round, in order: `sweeps` random permutations of range(k), concatenated."""
    if isinstance(sweeps, bool) or not isinstance(sweeps, numbers.Integral) or sweeps < 1:
        raise ValueError(f"sweeps (lp_rounds) must be an integer >= 1, got {sweeps!r}")
    return np.concatenate([rng.permutation(k) for _ in range(sweeps)])


def loss_decrease_matrix(
    order: Sequence[int], loss_0: Sequence[float], probe_losses: Sequence[Sequence[float]], k: int
) -> np.ndarray:
    """B (validation skills x k training skills) from the losses measured around a round's probes.

    Args:
        order: the skill of each probe (see [`probe_order`]); every skill is probed the same number of times.
        loss_0: the validation losses before the first probe.
        probe_losses: the validation losses after each probe, in `order`'s order.
        k: the number of training skills.
    """
    order = np.asarray(order, dtype=int)
    before = np.asarray(loss_0, dtype=np.float64)
    after = np.asarray(probe_losses, dtype=np.float64)
    if after.ndim != 2 or after.shape != (len(order), len(before)):
        raise ValueError(
            f"probe_losses must hold {len(order)} rows (one per probe) of {len(before)} losses (one per "
            f"validation skill), got shape {after.shape}"
        )
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        raise ValueError("the losses around the probes must be finite")
    counts = np.bincount(order, minlength=k)
    if len(counts) != k or counts.min() == 0 or counts.min() != counts.max():
        raise ValueError(
            f"every one of the k={k} skills must be probed the same number of times, got {order.tolist()}"
        )
    decrease = np.zeros((len(before), k))
    previous = before
    for skill, losses in zip(order, after, strict=True):
        decrease[:, skill] += previous - losses
        previous = losses
    return decrease / counts[0]


def solve_mixing_law(decrease: np.ndarray, one_hot_factor: float, diagonal: bool = False) -> np.ndarray:
    """A (validation skills x training skills) such that `decrease = A W^T`, W = [`probe_mixtures`]: each probe's
    loss decrease is the law's prediction for its mixture. `diagonal=True` (the authors' `--aioli_diagonal`) keeps
    only `decrease[i, i] / one_hot_factor`; as in their code it applies only when one_hot_factor < 1."""
    decrease = np.asarray(decrease, dtype=np.float64)
    k = decrease.shape[1]
    factor = check_one_hot_factor(k, one_hot_factor)
    if factor == 1:
        return decrease.copy()
    if diagonal:
        if decrease.shape[0] != k:
            raise ValueError("a diagonal mixing law needs the validation skills to be the training skills")
        return np.diag(np.diag(decrease) / factor)
    # W is symmetric, so solving W a = row for every row is decrease @ inv(W).
    return np.linalg.solve(probe_mixtures(k, factor), decrease.T).T


def normalize_mixing_law(matrix: np.ndarray) -> np.ndarray:
    """A shifted by its smallest entry when that is negative, then divided by the sum of its entries (zeros stay
    zeros: the authors' code would divide by zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    low = matrix.min()
    shifted = matrix - low if low < 0 else matrix.copy()
    total = shifted.sum()
    return shifted / total if total > 0 else shifted


class AioliUpdate:
    """The mixture update of Aioli across rounds: `step(A)` takes a round's estimate A and returns the next p.

    Args:
        k (`int`): the number of training skills.
        eta (`float`): the step size of the exponentiated gradient (`--eta`).
        ema (`float`, *optional*, defaults to `None`): γ in [0, 1), the weight of the past in the moving average of
            A (`--ema`); with it, p is recomputed from uniform every round.
        normalize (`bool`, *optional*, defaults to `True`): shift and scale A first (`--aioli_normalize_A`, which
            every run of the paper sets).
    """

    def __init__(self, k: int, eta: float, ema: float | None = None, normalize: bool = True):
        eta = check_eta(eta)
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 <= ema < 1):
            raise ValueError(f"ema must be None or a number in [0, 1), got {ema!r}")
        self.k, self.eta, self.ema, self.normalize = int(k), float(eta), ema, bool(normalize)
        self.log_weights = np.zeros(self.k)
        self.smoothed: np.ndarray | None = None

    def step(self, matrix: np.ndarray) -> np.ndarray:
        """The mixture after the round whose estimate is `matrix` (validation skills x k training skills)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.k or not np.isfinite(matrix).all():
            raise ValueError(f"A must be a finite matrix with {self.k} columns, got shape {matrix.shape}")
        if self.normalize:
            matrix = normalize_mixing_law(matrix)
        if self.ema is None:
            self.log_weights = self.log_weights + self.eta * matrix.sum(axis=0)
        else:
            self.smoothed = matrix if self.smoothed is None else (1 - self.ema) * matrix + self.ema * self.smoothed
            self.log_weights = self.eta * self.smoothed.sum(axis=0)
        return self.mixture()

    def mixture(self) -> np.ndarray:
        """The current p: softmax of the log-weights (uniform before the first step)."""
        weights = np.exp(self.log_weights - self.log_weights.max())
        return weights / weights.sum()

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_weights": self.log_weights.tolist(),
            "smoothed": None if self.smoothed is None else self.smoothed.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log_weights = np.asarray(state["log_weights"], dtype=np.float64)
        self.smoothed = None if state["smoothed"] is None else np.asarray(state["smoothed"], dtype=np.float64)
