"""Mixers: the mixture p_t over the training skills, round by round.

A mixer is pure numpy and stateful. `initial()` is the mixture of round 1; `update(eval_losses)` takes the
validation losses of the evaluation skills measured at the end of a round and returns the mixture of the next one;
`state_dict()`/`load_state_dict()` checkpoint it as plain JSON-serialisable data. Mixtures are float64 vectors over
`train_skills`, non-negative and summing to 1.

- `SkillItMixer`: Algorithm 1 of the paper, with the window counted in rounds (see its docstring).
- `StaticMixer`: Skill-It with a single round (T = 1): always p_1.
- `StratifiedMixer`: uniform over the training skills relevant to the evaluation skills (paper §3.3.1).
- `ProportionalMixer`: random sampling, i.e. in proportion to each skill's number of rows.
- `FixedMixer`: given weights, or a per-round schedule of weights.

- `NoGraphMixer`: the no-graph ablation (paper Appendix D.5), Skill-It on the identity graph: each skill is weighted
  by its own windowed loss only.

One registry maps names to mixer classes. Each class declares its `name`, whether it `needs_graph`, and how it
builds itself from a [`MixerSetup`] (the graph, the `SkillItConfig` settings and the skills' sizes) in
`from_setup`, and registers in `hf_skillit.mixer_registry` (which also defines the `Mixer` protocol):
`SkillItConfig(mixing=...)`, a recipe's `training.mixing:` and [`make_mixer`] all look names up there;
`register_mixer` adds a class of your own in one line, and the curricula of `hf_skillit.curriculum` register the
same way.

A round whose losses hold NaN or inf is skipped: the mixer warns, naming the evaluation skills, and returns its
current mixture; the round is not counted and does not enter the window.

`SkillItMixer` has two options beyond the paper, both off by default (docs/skill_it_options.md, issue 23):

- `loss_normalization="initial"`: each evaluation skill's loss is divided by its loss before training (round 0),
  so the update reads relative losses and eta means the same on any loss scale. This is the reference code's
  `normalize_loss` (HazyResearch/skill-it, `trainer/mw_trainer.py`: the window's losses divided by `loss_0`, the
  first evaluation's), which the paper does not describe and none of its scripts switch on.
- `mixture_smoothing=c`: every mixture is mixed with the uniform distribution over the skills that matter (those
  skill-stratified sampling draws from), p <- (1 - c) p + c u, as DoReMi smooths its domain weights: no relevant
  skill's weight falls below c / |support|, so none is starved into forgetting.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .graph import SkillsGraph
from .mixer_registry import Losses, Mixer, MixerSetup, check_mixer_inputs, check_mixer_settings, register_mixer
from .names import check_skill_names, compare_skills

__all__ = [
    "FixedMixer",
    "NoGraphMixer",
    "ProportionalMixer",
    "SkillItMixer",
    "StaticMixer",
    "StratifiedMixer",
    "WINDOW_REDUCTIONS",
    "check_eta",
    "check_reduce",
    "check_window",
    "check_skill_it_options",
    "dry_run_mixture",
    "make_mixer",
    "split_fixed_weights",
]

logger = logging.getLogger(__name__)


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Shifting by the max keeps exp() finite for any finite logits (log-sum-exp).
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def check_eta(eta: object) -> float:
    """`eta` as a float; a ValueError unless it is a finite number > 0 (the Skill-It learning rate, eq. 4)."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    return float(eta)


WINDOW_REDUCTIONS = ("sum", "mean")
LOSS_NORMALIZATIONS = ("none", "initial")


def check_mixture_smoothing(smoothing: object) -> float:
    """`mixture_smoothing` as a float; a ValueError unless 0 <= it < 1 (1 would ignore the losses altogether)."""
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < 1:
        raise ValueError(f"mixture_smoothing must be a number in [0, 1), got {smoothing!r}")
    return float(smoothing)


def check_loss_normalization(normalization: object) -> str:
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(f"loss_normalization must be one of {', '.join(LOSS_NORMALIZATIONS)}, got {normalization!r}")
    return str(normalization)


def check_skill_it_options(mixer: type, loss_normalization: object, mixture_smoothing: object) -> None:
    """Check the values of `SkillItConfig.loss_normalization` and `mixture_smoothing`, and that `mixer` (a registered
    class) uses them: they are options of `SkillItMixer` (`skill_it`, `no_graph`), not of the other mixers."""
    if (check_loss_normalization(loss_normalization), check_mixture_smoothing(mixture_smoothing)) == ("none", 0.0):
        return
    if not issubclass(mixer, SkillItMixer):
        raise ValueError(
            f"loss_normalization and mixture_smoothing are options of the Skill-It update (mixing='skill_it' or "
            f"'no_graph'); mixing={mixer.name!r} would ignore them"
        )


def relevant_skills(graph: SkillsGraph) -> set[str]:
    """The training skills that matter to the evaluation skills, the support of skill-stratified sampling.

    Continual pre-training (evaluation skills = training skills): all training skills; fine-tuning (evaluation
    skills within the training skills, or a partial overlap): the trainable targets and their prerequisites (the
    training skills with a positive edge into a target); out-of-domain (disjoint): the prerequisites.
    """
    train, evaluation = set(graph.train_skills), set(graph.eval_skills)
    relevant = train if evaluation == train else (evaluation & train) | set(graph.prerequisites())
    if not relevant:
        raise ValueError(
            f"no training skill has a positive edge into the evaluation skills {list(graph.eval_skills)}: "
            "there is nothing to sample uniformly"
        )
    return relevant


def check_window(window: object) -> int:
    """`window` as an int; a ValueError unless it is an integer >= 1 (rounds, or evaluations: `window_unit`)."""
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    return int(window)


def check_reduce(reduce: object, key: str = "reduce") -> str:
    """`reduce` (how a window's losses combine); a ValueError naming `key` unless it is one of `WINDOW_REDUCTIONS`."""
    if reduce not in WINDOW_REDUCTIONS:
        raise ValueError(f"{key} must be one of {', '.join(WINDOW_REDUCTIONS)}, got {reduce!r}")
    return reduce


def _loss_vector(eval_losses: Losses, eval_skills: tuple[str, ...]) -> np.ndarray:
    """The losses as a float64 vector in `eval_skills` order."""
    if isinstance(eval_losses, Mapping):
        missing, unknown = compare_skills(eval_losses, eval_skills)
        if missing or unknown:
            raise ValueError(
                f"eval_losses must have exactly the evaluation skills {list(eval_skills)}: "
                f"missing {missing}, unknown {unknown}"
            )
        values = [eval_losses[name] for name in eval_skills]
    else:
        values = list(eval_losses)
        if len(values) != len(eval_skills):
            raise ValueError(
                f"expected {len(eval_skills)} losses (one per evaluation skill {list(eval_skills)}), got {len(values)}"
            )
    losses = np.asarray(values, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"eval_losses must be one number per evaluation skill, got shape {losses.shape}")
    return losses


def _normalised(weights: Mapping[str, float] | Sequence[float], skills: tuple[str, ...], label: str) -> np.ndarray:
    """Non-negative weights over `skills` (a mapping may leave skills out: weight 0), scaled to sum to 1."""
    if isinstance(weights, Mapping):
        if unknown := [name for name in weights if name not in set(skills)]:
            raise ValueError(f"{label}: unknown skills {unknown}; training skills: {list(skills)}")
        values = [weights.get(name, 0.0) for name in skills]
    else:
        values = list(weights)
        if len(values) != len(skills):
            raise ValueError(f"{label}: expected {len(skills)} weights (one per training skill), got {len(values)}")
    vector = np.asarray(values, dtype=np.float64)
    for name, value in zip(skills, vector, strict=True):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{label}: weight of skill {name!r} is {value}; weights must be finite and >= 0")
    if vector.sum() == 0:
        raise ValueError(f"{label}: all weights are zero")
    return vector / vector.sum()


class _BaseMixer:
    """Names, the current mixture, the round counter and checkpoint checks shared by all mixers.

    A subclass sets `name` (its registry name), `needs_graph` (whether it is meaningless without a skills graph),
    optionally `settings_required` (`SkillItConfig` settings it cannot do without, with a hint each), and builds
    itself in the classmethod `from_setup` (`hf_skillit.mixer_registry`).
    """

    name: ClassVar[str]
    needs_graph: ClassVar[bool] = False
    settings_required: ClassVar[Mapping[str, str]] = {}
    # The name saved in checkpoints: a subclass that only builds its parent differently keeps the parent's state.
    state_name: ClassVar[str | None] = None

    def __init__(self, train_skills: tuple[str, ...], eval_skills: tuple[str, ...], initial: np.ndarray) -> None:
        self.train_skills = train_skills
        self.eval_skills = eval_skills
        self.round = 0  # updates applied (skipped rounds excluded)
        self._initial = initial
        self._current = initial

    def initial(self) -> np.ndarray:
        return self._initial.copy()

    @property
    def current(self) -> np.ndarray:
        """The mixture for the next round: p_1 before any update, else what the last `update` returned."""
        return self._current.copy()

    def _finite_losses(self, eval_losses: Losses) -> np.ndarray | None:
        """The loss vector, or None (after a warning) when it holds NaN or inf."""
        losses = _loss_vector(eval_losses, self.eval_skills)
        if np.isfinite(losses).all():
            return losses
        bad = {self.eval_skills[j]: float(losses[j]) for j in np.flatnonzero(~np.isfinite(losses))}
        message = f"{type(self).__name__}: non-finite validation losses {bad}; keeping the current mixture"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return None

    def _state(self, **fields: Any) -> dict[str, Any]:
        return {
            "mixer": self.state_name or self.name,
            "train_skills": list(self.train_skills),
            "eval_skills": list(self.eval_skills),
            "round": self.round,
            **fields,
        }

    def _check_state(self, state: Mapping[str, Any], *keys: str, **fields: Any) -> None:
        """Check that `state` has `keys` and was saved by a mixer configured like this one (`fields` included)."""
        expected = {
            "mixer": self.state_name or self.name,
            "train_skills": self.train_skills,
            "eval_skills": self.eval_skills,
            **fields,
        }
        if missing := [key for key in (*expected, "round", *keys) if key not in state]:
            raise ValueError(f"{type(self).__name__} state has no {missing} entries")
        for key, value in expected.items():
            saved = tuple(state[key]) if isinstance(value, tuple) else state[key]
            if saved != value:
                raise ValueError(f"{type(self).__name__} state has {key}={state[key]!r}, this mixer has {value!r}")


class SkillItMixer(_BaseMixer):
    """Skill-It online data selection (paper Algorithm 1) over a k x m skills graph.

    p_1[i] ∝ exp(eta * sum_j A[i, j]); after round t with losses L_t,
    p_{t+1}[i] ∝ exp(eta * sum_{τ=t-w+1..t} sum_j A[i, j] L_τ[j]). The window w counts rounds (the paper's text);
    before w rounds have passed it sums the rounds so far.

    The reference code (HazyResearch/skill-it, `trainer/mw_trainer.py`) differs in two ways, offered as options:
    its window counts evaluations, taken every `max_steps / num_ckpts` steps within the rounds (LEGO: every 50 of
    1000), not rounds: `observe` adds such an evaluation to the window without changing the mixture
    (`SkillItConfig(window_unit="evaluations", skill_eval_steps=...)`); and in fine-tuning (`--target_mask`) it
    averages the window's losses instead of summing them, so eta acts w times weaker (`reduce="mean"`).

    Two options go beyond the paper (issue 23; docs/skill_it_options.md), both off by default:

    - `loss_normalization="initial"`: L_τ[j] is replaced by L_τ[j] / L_0[j], L_0 the losses before training,
      given with `set_initial_losses` (the trainer does so); a mixer that gets none takes the first losses of
      `update` or `observe` as L_0. The reference code's `--normalize_loss`. Relative losses start at 1, so
      eta means what it means for p_1 whatever the losses' scale (nats, or a task's NLL).
    - `mixture_smoothing=c`: every mixture, p_1 included, becomes (1 - c) p + c u, u uniform over the skills that matter
      ([`relevant_skills`], the support of skill-stratified sampling): each of them keeps at least c / |support|.

    Args:
        graph: rows are the training skills, columns the evaluation skills whose losses `update` expects.
        eta: learning rate of the multiplicative update, > 0.
        window: number of most recent rounds (or evaluations, see `observe`) whose losses drive the mixture, >= 1.
        reduce: how the window's losses combine: "sum" (the paper's equation) or "mean" (the reference code's
            fine-tuning).
        loss_normalization: "none" (the paper's rule) or "initial" (losses relative to the losses before training).
        mixture_smoothing: c in [0, 1), the share of the uniform distribution over the relevant skills in every
            mixture (`SkillItConfig.mixture_smoothing`).
    """

    name = "skill_it"
    needs_graph = True

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> SkillItMixer:
        return cls(
            setup.targeted_graph(),
            setup.eta,
            setup.window,
            setup.window_reduce,
            loss_normalization=setup.loss_normalization,
            mixture_smoothing=setup.mixture_smoothing,
        )

    def __init__(
        self,
        graph: SkillsGraph,
        eta: float = 0.5,
        window: int = 3,
        reduce: str = "sum",
        *,
        loss_normalization: str = "none",
        mixture_smoothing: float = 0.0,
    ) -> None:
        self.eta = check_eta(eta)
        self.window = check_window(window)
        self.reduce = check_reduce(reduce)
        self.loss_normalization = check_loss_normalization(loss_normalization)
        self.mixture_smoothing = check_mixture_smoothing(mixture_smoothing)
        self._matrix = graph.matrix
        self._history: list[np.ndarray] = []
        self._initial_losses: np.ndarray | None = None  # L_0 of loss_normalization="initial"
        if self.mixture_smoothing:
            relevant = relevant_skills(graph)
            support = np.array([1.0 if name in relevant else 0.0 for name in graph.train_skills])
            self._uniform = support / support.sum()
        super().__init__(graph.train_skills, graph.eval_skills, self._smoothed(graph.matrix.sum(axis=1)))

    @property
    def wants_initial_losses(self) -> bool:
        """Whether the trainer should measure the evaluation skills before training and `set_initial_losses`."""
        return self.loss_normalization == "initial"

    def set_initial_losses(self, eval_losses: Losses) -> None:
        """L_0 of `loss_normalization="initial"`: the losses before training (ignored without normalisation).

        Each must be finite and > 0 (a ValueError names the skill otherwise): it divides the later losses.
        """
        if not self.wants_initial_losses:
            return
        losses = _loss_vector(eval_losses, self.eval_skills)
        if bad := {self.eval_skills[j]: float(v) for j, v in enumerate(losses) if not (np.isfinite(v) and v > 0)}:
            raise ValueError(
                f"loss_normalization='initial' divides by each evaluation skill's loss before training, which must "
                f"be finite and > 0: {bad}"
            )
        self._initial_losses = losses

    def _smoothed(self, row_scores: np.ndarray) -> np.ndarray:
        p = _softmax(self.eta * row_scores)
        c = self.mixture_smoothing
        return (1 - c) * p + c * self._uniform if c else p

    def _remember(self, losses: np.ndarray) -> None:
        if self.wants_initial_losses and self._initial_losses is None:
            self.set_initial_losses(losses)
        self._history = [*self._history, losses][-self.window :]

    def update(self, eval_losses: Losses) -> np.ndarray:
        losses = self._finite_losses(eval_losses)
        if losses is not None:
            self._remember(losses)
            self.round += 1
            self._current = self._mixture()
        return self.current

    def observe(self, eval_losses: Losses) -> None:
        """An evaluation inside a round: it enters the window (counted in evaluations), the mixture stays."""
        losses = self._finite_losses(eval_losses)
        if losses is not None:
            self._remember(losses)

    def _mixture(self) -> np.ndarray:
        if not self._history:
            return self._initial
        combine = np.sum if self.reduce == "sum" else np.mean
        window = np.asarray(self._history)
        if self._initial_losses is not None:
            window = window / self._initial_losses
        return self._smoothed(self._matrix @ combine(window, axis=0))

    def state_dict(self) -> dict[str, Any]:
        history = [losses.tolist() for losses in self._history]
        extra: dict[str, Any] = {}
        if self.loss_normalization != "none" or self.mixture_smoothing:  # older checkpoints have neither key
            initial = None if self._initial_losses is None else self._initial_losses.tolist()
            extra = {
                "loss_normalization": self.loss_normalization,
                "mixture_smoothing": self.mixture_smoothing,
                "initial": initial,
            }
        return self._state(eta=self.eta, window=self.window, reduce=self.reduce, history=history, **extra)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, "history", eta=self.eta, window=self.window)
        if "smoothing" in state:  # its name in the checkpoints written before issue 24 gave it the config's name
            state = {**{k: v for k, v in state.items() if k != "smoothing"}, "mixture_smoothing": state["smoothing"]}
        # Checkpoints from before these options summed, did not normalise and did not smooth.
        for key, default, value in (
            ("reduce", "sum", self.reduce),
            ("loss_normalization", "none", self.loss_normalization),
            ("mixture_smoothing", 0.0, self.mixture_smoothing),
        ):
            if state.get(key, default) != value:
                raise ValueError(f"SkillItMixer state has {key}={state.get(key, default)!r}, this mixer has {value!r}")
        history = [_loss_vector(losses, self.eval_skills) for losses in state["history"]]
        if len(history) > self.window or not all(np.isfinite(losses).all() for losses in history):
            raise ValueError(f"SkillItMixer state history must be at most {self.window} rounds of finite losses")
        self._initial_losses = None
        if state.get("initial") is not None:
            self.set_initial_losses(state["initial"])
        self._history = history
        self.round = int(state["round"])
        self._current = self._mixture()


class StaticMixer(_BaseMixer):
    """Skill-It with a single round (T = 1): p_1[i] ∝ exp(eta * sum_j A[i, j]) throughout.

    `update` still checks that it gets one loss per evaluation skill.
    """

    name = "static"
    needs_graph = True

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> StaticMixer:
        return cls(setup.targeted_graph(), setup.eta)

    def __init__(self, graph: SkillsGraph, eta: float = 0.5) -> None:
        self.eta = check_eta(eta)
        super().__init__(graph.train_skills, graph.eval_skills, _softmax(self.eta * graph.matrix.sum(axis=1)))

    def update(self, eval_losses: Losses) -> np.ndarray:
        if self._finite_losses(eval_losses) is not None:
            self.round += 1
        return self.current

    def state_dict(self) -> dict[str, Any]:
        return self._state(eta=self.eta)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, eta=self.eta)
        self.round = int(state["round"])


class _LossFreeMixer(_BaseMixer):
    """A mixer whose mixture does not depend on losses: `eval_skills` is empty and `update` accepts losses of any
    length (or any object) and ignores them."""

    def update(self, eval_losses: Losses) -> np.ndarray:
        self.round += 1
        self._current = self._mixture()
        return self.current

    def _mixture(self) -> np.ndarray:
        return self._initial

    def state_dict(self) -> dict[str, Any]:
        return self._state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state)
        self.round = int(state["round"])
        self._current = self._mixture()


class StratifiedMixer(_LossFreeMixer):
    """Skill-stratified sampling (paper §3.3.1): uniform over the training skills relevant to the evaluation skills.

    The setting follows from the graph's names:
    - continual pre-training (evaluation skills = training skills): all training skills;
    - fine-tuning (evaluation skills ⊂ training skills): the targets and their prerequisites, the training skills
      with a positive edge into a target; a partial overlap is treated the same way (the trainable targets);
    - out-of-domain (disjoint): the prerequisites of the evaluation skills.
    """

    name = "stratified"

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> StratifiedMixer:
        return cls(setup.targeted_graph())

    def __init__(self, graph: SkillsGraph) -> None:
        relevant = relevant_skills(graph)
        uniform = np.array([1.0 if name in relevant else 0.0 for name in graph.train_skills])
        super().__init__(graph.train_skills, (), uniform / uniform.sum())

    @classmethod
    def from_skills(cls, train_skills: Sequence[str]) -> StratifiedMixer:
        """Uniform over all of `train_skills`."""
        return cls(SkillsGraph.identity(train_skills))


class ProportionalMixer(_LossFreeMixer):
    """Random sampling: each training skill in proportion to its number of rows (the mapping's order)."""

    name = "random"

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> ProportionalMixer:
        sizes = setup.train_sizes
        if sizes is None:
            raise ValueError("the 'random' mixer needs train_sizes (rows per training skill)")
        if set(sizes) != set(setup.train_skills):
            raise ValueError(
                f"train_sizes must name the graph's training skills {list(setup.train_skills)}, got {list(sizes)}"
            )
        return cls({skill: sizes[skill] for skill in setup.train_skills})

    def __init__(self, sizes: Mapping[str, int]) -> None:
        skills = check_skill_names(list(sizes), "training")
        for skill, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
                raise ValueError(
                    f"skill {skill!r} has size {size!r}; random sampling needs a positive row count per skill "
                    "(an IterableDataset's is unknown)"
                )
        counts = np.array([sizes[skill] for skill in skills], dtype=np.float64)
        super().__init__(skills, (), counts / counts.sum())


class FixedMixer(_LossFreeMixer):
    """Given weights, or a schedule: round t uses `schedule[t - 1]`, and the last entry once the schedule ends.

    Weights are a mapping skill -> weight (skills left out get 0) or a sequence in `train_skills` order; they are
    normalised to sum to 1. Give exactly one of `weights` and `schedule`.
    """

    name = "fixed"
    settings_required = {"fixed_weights": "{skill: weight} or a per-round schedule"}

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> FixedMixer:
        weights, schedule = split_fixed_weights(setup.fixed_weights)
        return cls(setup.train_skills, weights=weights, schedule=schedule)

    def __init__(
        self,
        train_skills: Sequence[str],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        schedule: Sequence[Mapping[str, float] | Sequence[float]] | None = None,
    ) -> None:
        skills = check_skill_names(train_skills, "training")
        if (weights is None) == (schedule is None):
            raise ValueError("FixedMixer needs exactly one of weights and schedule")
        if weights is not None:
            self._schedule = [_normalised(weights, skills, "weights")]
        else:
            if isinstance(schedule, (Mapping, str)) or not schedule:
                raise ValueError(f"schedule must be a non-empty list of weights, got {schedule!r}")
            self._schedule = [_normalised(entry, skills, f"schedule[{t}]") for t, entry in enumerate(schedule)]
        super().__init__(skills, (), self._schedule[0])

    def _mixture(self) -> np.ndarray:
        return self._schedule[min(self.round, len(self._schedule) - 1)]


class NoGraphMixer(SkillItMixer):
    """The no-graph ablation (paper Appendix D.5): Skill-It on the identity graph over the training skills."""

    name = "no_graph"
    needs_graph = False
    state_name = "skill_it"  # it is a SkillItMixer: its checkpoints are SkillItMixer state

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> NoGraphMixer:
        # SkillItMixer's construction with the identity in place of the given graph (targets restricted the same way).
        return super().from_setup(setup.replace(graph=SkillsGraph.identity(setup.train_skills)))


def split_fixed_weights(
    value: Any,
) -> tuple[Mapping[str, float] | Sequence[float] | None, Sequence[Mapping[str, float] | Sequence[float]] | None]:
    """`fixed_weights` as (weights, schedule), at most one of them set.

    A schedule is a list whose entries are weights (mappings or lists), or `{"schedule": [...]}`; anything else
    (a mapping skill -> weight, a flat list of numbers) is one set of weights for every round.
    """
    if isinstance(value, Mapping) and "schedule" in value:
        return None, value["schedule"]
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and isinstance(value[0], (Mapping, Sequence))
    ):
        return None, value
    return value, None


def make_mixer(
    name: str,
    *,
    graph: SkillsGraph,
    train_sizes: Mapping[str, int | None] | None = None,
    eta: float = 0.5,
    window: int = 3,
    fixed_weights: Any = None,
    target_skills: Sequence[str] | None = None,
    window_reduce: str = "sum",
    loss_normalization: str = "none",
    mixture_smoothing: float = 0.0,
) -> Mixer:
    """Build a registered mixer by name from a graph alone (the curricula, which score data, need `SkillItTrainer`).

    Args:
        name: "skill_it", "static", "stratified", "random" (needs `train_sizes`), "no_graph" (Skill-It on the
            identity graph over the training skills), "fixed" (needs `fixed_weights`: weights, or a list of weights
            taken as a per-round schedule), or a name added with [`register_mixer`].
        graph: the skills graph; its training skills are the mixture's.
        target_skills: fine-tuning targets: the graph is restricted to these evaluation columns first.
    """
    setup = MixerSetup(
        graph.train_skills,
        graph,
        train_sizes,
        eta,
        window,
        fixed_weights,
        target_skills,
        window_reduce=window_reduce,
        loss_normalization=loss_normalization,
        mixture_smoothing=mixture_smoothing,
    )
    check_mixer_inputs(name, graph, graph.train_skills, target_skills)
    cls = check_mixer_settings(name, setup)
    check_skill_it_options(cls, loss_normalization, mixture_smoothing)
    return cls.from_setup(setup)


for _cls in (SkillItMixer, StaticMixer, StratifiedMixer, ProportionalMixer, NoGraphMixer, FixedMixer):
    register_mixer(_cls)


def dry_run_mixture(graph: SkillsGraph, eta: float, header: str = "source") -> str:
    """The static Skill-It mixture (T = 1: p[i] ∝ exp(eta * sum_j A[i, j])) of `graph` as a two-column table,
    laid out like the paper's Figure 7 (right)."""
    weights = StaticMixer(graph, eta).initial()
    width = max(len(header), *(len(name) for name in graph.train_skills))
    lines = [f"{header:<{width}}  Skill-It mixture", f"{'-' * width}  ----------------"]
    lines += [f"{name:<{width}}  {weight:.4f}" for name, weight in zip(graph.train_skills, weights, strict=True)]
    return "\n".join(lines)
