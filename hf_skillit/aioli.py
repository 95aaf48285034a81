"""The Aioli update (Chen et al., arXiv 2411.05735): the mixing-law matrix estimated from probe phases, and the
mixture that follows from it, and [`AioliMixer`], the registered mixer `mixing="aioli"` that runs them with the
trainer's probe phases (`hf_skillit.probing`; docs/aioli.md).

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

[`AioliMixer`] is a [`ProbingMixer`]: at each round's start it asks for the round's probes (`aioli_sweeps`
permutations of the skills, each probe `aioli_probe_steps` steps on its row of W), reads the evaluation after each,
and after the last one computes B, A and the round's p. The losses before the first probe are the previous round's
end evaluation (the same model), and for round 1 the evaluation before training (`wants_initial_losses`). The
probe order of round t is drawn from a generator seeded by (seed, t), not from a global generator as in the
authors' code: the same order on every process and after a resume, with the same distribution.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .mixer_registry import CONFIG_SETTINGS, Losses, MixerSetup, Probe, register_mixer
from .mixing import _loss_vector, check_eta

AIOLI_SETTINGS = tuple(name for name in CONFIG_SETTINGS if name.startswith("aioli_"))
"""The `SkillItConfig` settings of Aioli (`aioli_probe_steps`, ...): `AioliMixer`'s options with the prefix."""

__all__ = [
    "AIOLI_DEFAULTS",
    "AioliMixer",
    "AioliUpdate",
    "check_aioli_options",
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


logger = logging.getLogger(__name__)

AIOLI_DEFAULTS: dict[str, Any] = {
    "aioli_probe_steps": 5,
    "aioli_sweeps": 1,
    "aioli_one_hot_factor": 1.0,
    "aioli_ema": None,
    "aioli_normalize": True,
    "aioli_diagonal": False,
}
"""The `SkillItConfig` settings of `mixing="aioli"` and their defaults: the authors' code's (`main.py`), except
`aioli_normalize`, on in every paper run."""


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_ema(ema: object) -> float | None:
    if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 <= ema < 1):
        raise ValueError(f"aioli_ema must be None or a number in [0, 1), got {ema!r}")
    return None if ema is None else float(ema)


def check_aioli_options(mixer: type, settings: Any) -> None:
    """Check the `aioli_*` settings of `settings` (a `SkillItConfig`) that do not depend on the skills, and that
    only `mixing="aioli"` changes them (another mixer would ignore them). The checks that need the number of skills
    or of steps per round run when the mixer is built ([`AioliMixer.from_setup`]), still before training."""
    values = {key: getattr(settings, key, default) for key, default in AIOLI_DEFAULTS.items()}
    changed = [key for key, default in AIOLI_DEFAULTS.items() if values[key] != default]
    if changed and not issubclass(mixer, AioliMixer):
        raise ValueError(
            f"{', '.join(changed)} {'is an option' if len(changed) == 1 else 'are options'} of mixing='aioli'; "
            f"mixing={mixer.name!r} would ignore {'it' if len(changed) == 1 else 'them'}"
        )
    _positive_int("aioli_probe_steps", values["aioli_probe_steps"])
    _positive_int("aioli_sweeps", values["aioli_sweeps"])
    factor = values["aioli_one_hot_factor"]
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor <= 1:
        raise ValueError(f"aioli_one_hot_factor must be in (1/k, 1] for k training skills, got {factor!r}")
    _check_ema(values["aioli_ema"])
    for key in ("aioli_normalize", "aioli_diagonal"):
        if not isinstance(values[key], bool):
            raise ValueError(f"{key} must be true or false, got {values[key]!r}")


@register_mixer
class AioliMixer:
    """Aioli (Chen et al., arXiv 2411.05735) as a probing mixer: the mixing law A estimated online in every round.

    Args:
        train_skills (`tuple[str, ...]`): the training skills (the mixture's entries, A's columns).
        eval_skills (`tuple[str, ...]`): the validation skills whose losses the law predicts (A's rows).
        eta (`float`): step size of the exponentiated gradient.
        probe_steps (`int`, *optional*, defaults to `5`): steps of each probe.
        sweeps (`int`, *optional*, defaults to `1`): probes per skill and round.
        one_hot_factor (`float`, *optional*, defaults to `1.0`): ε, the probed skill's weight in its probe.
        ema (`float`, *optional*): γ of the moving average of A.
        normalize (`bool`, *optional*, defaults to `True`): shift and scale A before the update.
        diagonal (`bool`, *optional*, defaults to `False`): keep only A's diagonal.
        seed (`int`, *optional*, defaults to `0`): seeds each round's probe order, with the round's index.
        steps_per_round (`int`, *optional*): when given, the probes must leave the round at least one step.
    """

    name: ClassVar[str] = "aioli"
    needs_graph: ClassVar[bool] = False
    wants_initial_losses: ClassVar[bool] = True

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> AioliMixer:
        # The config's `aioli_<option>` settings are this class's `<option>` arguments, one for one.
        options = {name.removeprefix("aioli_"): getattr(setup, name) for name in AIOLI_SETTINGS}
        eval_skills = setup.targeted_graph().eval_skills
        return cls(
            setup.train_skills,
            eval_skills,
            setup.eta,
            seed=setup.seed,
            steps_per_round=setup.steps_per_round,
            **options,
        )

    def __init__(
        self,
        train_skills: Sequence[str],
        eval_skills: Sequence[str],
        eta: float,
        probe_steps: int = 5,
        sweeps: int = 1,
        one_hot_factor: float = 1.0,
        ema: float | None = None,
        normalize: bool = True,
        diagonal: bool = False,
        seed: int = 0,
        steps_per_round: int | None = None,
    ) -> None:
        self.train_skills, self.eval_skills = tuple(train_skills), tuple(eval_skills)
        k = len(self.train_skills)
        self.one_hot_factor = check_one_hot_factor(k, one_hot_factor)
        self.probe_steps = _positive_int("aioli_probe_steps", probe_steps)
        self.sweeps = _positive_int("aioli_sweeps", sweeps)
        if diagonal and (self.one_hot_factor == 1 or set(self.eval_skills) != set(self.train_skills)):
            raise ValueError(
                "aioli_diagonal needs aioli_one_hot_factor < 1 (with one-hot probes the authors' code ignores it) and "
                f"the validation skills to be the training skills (validation: {list(self.eval_skills)})"
            )
        if steps_per_round is not None and self.sweeps * k * self.probe_steps >= steps_per_round:
            raise ValueError(
                f"mixing='aioli' probes aioli_sweeps x k x aioli_probe_steps = {self.sweeps} x {k} x "
                f"{self.probe_steps} = {self.sweeps * k * self.probe_steps} steps per round, which leaves none of the "
                f"{steps_per_round} steps of a round (max_steps / rounds) for the round's own mixture: lower them or "
                "raise max_steps / rounds"
            )
        if not self.eval_skills:
            raise ValueError("mixing='aioli' needs validation skills: it learns from their losses")
        self.diagonal, self.seed = bool(diagonal), int(seed)
        self.update_rule = AioliUpdate(k, eta, ema=_check_ema(ema), normalize=normalize)
        self.mixtures = probe_mixtures(k, self.one_hot_factor)
        self.round = 0
        self.loss_0: np.ndarray | None = None
        self.order: list[int] = []
        self.probe_losses: list[list[float]] = []
        self.estimate: np.ndarray | None = None  # the round's A (validation x training skills), before normalising

    # ----- the Mixer protocol ------------------------------------------------------------------------------

    def initial(self) -> np.ndarray:
        return self.update_rule.mixture()

    def set_initial_losses(self, eval_losses: Losses) -> None:
        self.loss_0 = _loss_vector(eval_losses, self.eval_skills)

    def update(self, eval_losses: Losses) -> np.ndarray:
        """The round's end: its losses are the next round's starting point; p stays until the next probes end."""
        self.loss_0 = _loss_vector(eval_losses, self.eval_skills)
        self.round += 1
        return self.update_rule.mixture()

    # ----- the probes --------------------------------------------------------------------------------------

    def probes(self, round_index: int) -> list[Probe]:
        rng = np.random.default_rng([self.seed, int(round_index)])
        self.order = probe_order(len(self.train_skills), self.sweeps, rng).tolist()
        self.probe_losses, self.estimate = [], None
        return [Probe(self.mixtures[j].copy(), self.probe_steps, self.train_skills[j]) for j in self.order]

    def observe_probe(self, index: int, eval_losses: Losses) -> None:
        if index != len(self.probe_losses):
            raise ValueError(f"probe {index} observed after {len(self.probe_losses)} probes of the round")
        self.probe_losses.append(_loss_vector(eval_losses, self.eval_skills).tolist())

    def after_probes(self) -> np.ndarray:
        """B from the losses around the probes, A from B, and the round's p; p unchanged (with a warning) when a
        loss is not finite."""
        if self.loss_0 is None or len(self.probe_losses) != len(self.order):
            raise ValueError(f"after_probes() needs the losses before and after all {len(self.order)} probes")
        losses = np.asarray([self.loss_0, *self.probe_losses])
        if not np.isfinite(losses).all():
            message = f"AioliMixer: non-finite validation losses around round {self.round + 1}'s probes; p unchanged"
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return self.update_rule.mixture()
        decrease = loss_decrease_matrix(self.order, self.loss_0, self.probe_losses, len(self.train_skills))
        self.estimate = solve_mixing_law(decrease, self.one_hot_factor, self.diagonal)
        return self.update_rule.step(self.estimate)

    def round_record(self) -> dict[str, Any]:
        """The round's estimate for the trajectory: `A[train][eval]`, the transpose of the authors' A (a skills
        graph's orientation: rows are training skills), before normalisation; absent if the round skipped it."""
        if self.estimate is None:
            return {}
        rows = zip(self.train_skills, self.estimate.T.tolist(), strict=True)
        return {"A": {t: dict(zip(self.eval_skills, row, strict=True)) for t, row in rows}}

    # ----- checkpoints -------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        rule = self.update_rule
        return {
            "mixer": self.name,
            "train_skills": list(self.train_skills),
            "eval_skills": list(self.eval_skills),
            "eta": rule.eta,
            "probe_steps": self.probe_steps,
            "sweeps": self.sweeps,
            "one_hot_factor": self.one_hot_factor,
            "ema": rule.ema,
            "normalize": rule.normalize,
            "diagonal": self.diagonal,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._settings(),
            "round": self.round,
            "update": self.update_rule.state_dict(),
            "loss_0": None if self.loss_0 is None else self.loss_0.tolist(),
            "order": list(self.order),
            "probe_losses": self.probe_losses,
            "estimate": None if self.estimate is None else self.estimate.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in self._settings().items():
            if key not in state:
                raise ValueError(f"AioliMixer state has no {key!r} entry")
            if state[key] != value:
                raise ValueError(f"AioliMixer state has {key}={state[key]!r}, this mixer has {value!r}")
        self.round = int(state["round"])
        self.update_rule.load_state_dict(state["update"])
        self.loss_0 = None if state["loss_0"] is None else np.asarray(state["loss_0"], dtype=np.float64)
        self.order = [int(j) for j in state["order"]]
        self.probe_losses = [list(map(float, row)) for row in state["probe_losses"]]
        self.estimate = None if state["estimate"] is None else np.asarray(state["estimate"], dtype=np.float64)
