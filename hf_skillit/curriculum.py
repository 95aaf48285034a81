"""Curriculum baselines of the Skill-It paper, expressed as per-round `FixedMixer` schedules.

Every baseline here is a SkillSet plus a schedule `[{skill: weight}, ...]` (one entry per round) that
[`SkillItTrainer`] runs with `mixing="fixed"`, `fixed_weights=schedule`, `rounds=len(schedule)`:

- Sample-level curriculum / anticurriculum (Bengio et al. 2009; Wu et al. 2021; paper §4.1 and Appendix C.3):
  every training row is scored by a model's loss on its scored tokens and ranked easiest -> hardest (anti:
  the reverse). With the pacing function g(i) = i N / M, epoch i of M samples uniformly from the g(i)
  top-ranked rows. The ranked pool is cut into M equal difficulty buckets, which become the training skills;
  phase i weights buckets 1..i by their sizes, i.e. uniform over exactly the top g(i) rows. The validation
  skills stay the original ones, so the per-skill losses remain comparable with every other method.
- Skill-curriculum / skill-anticurriculum (Varshney et al. 2022, Algorithm 1; paper Appendix D.3.1): the skills
  are ranked by their rows' average loss and trained one after another, each phase mixing in `frac` of every
  previously seen skill against forgetting, followed by a final phase over all skills (the reference
  implementation's, which produced the paper's numbers). Skills count as equal-sized groups: the paper draws
  this baseline from a skill-stratified pool.

Each baseline is also a registered mixer (`hf_skillit.mixer_registry`), so `SkillItConfig(mixing="curriculum")`
or a recipe's `training.mixing: skill_curriculum` runs it directly: [`SkillItTrainer`] scores its training data with
the model it was given (before training) and trains the resulting schedule over `rounds` rounds. The schedule is
saved with the mixer's checkpoint state, so a resumed run keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .mixer_registry import MixerSetup, register_mixer
from .mixing import FixedMixer

# The scoring (torch) and the data (datasets) are imported by the functions that use them: importing this module
# registers the curricula, which `hf-skillit train --dry-run` needs before torch is imported (a second or more).
if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

    from .scoring import Autocast
    from .skills import SkillSet

__all__ = [
    "CURRICULA",
    "CurriculumMixer",
    "SkillCurriculumMixer",
    "curriculum_baseline",
    "curriculum_setup",
    "difficulty_order",
    "pacing_buckets",
    "pacing_schedule",
    "sample_losses",
    "skill_curriculum_schedule",
    "skill_curriculum_setup",
    "skill_losses",
]

CURRICULA = ("curriculum", "anticurriculum", "skill_curriculum", "skill_anticurriculum")

Collator = Callable[[list[dict[str, Any]]], "dict[str, torch.Tensor]"]
Schedule = list[dict[str, float]]


def sample_losses(
    model: nn.Module,
    dataset: datasets.Dataset,
    collator: Collator,
    batch_size: int = 64,
    autocast: Autocast | None = None,
) -> np.ndarray:
    """Each row's mean next-token loss over its scored positions (`labels != -100`; all tokens without labels).

    Batched forward passes on the model's device, in eval mode (restored afterwards), through `hf_skillit.scoring`,
    under `autocast` (a context-manager factory, e.g. `accelerator.autocast`; None: the model's own precision).
    """
    from .scoring import score_rows

    scores = score_rows(model, dataset, collator, batch_size, autocast=autocast or contextlib.nullcontext)
    if (scores.count == 0).any():
        row = int(np.flatnonzero(scores.count == 0)[0])
        raise ValueError(f"row {row} has no scored token (all labels are -100): it cannot be ranked")
    return scores.mean_loss


def difficulty_order(scores: Sequence[float] | np.ndarray, anti: bool = False) -> np.ndarray:
    """Row indices from easiest (lowest score) to hardest, ties in row order; `anti` reverses the ranking."""
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    return order[::-1].copy() if anti else order


def pacing_buckets(order: np.ndarray, num_epochs: int) -> list[np.ndarray]:
    """Cut a ranking into `num_epochs` = M consecutive buckets; bucket i holds ranks floor((i-1)N/M) .. floor(iN/M)-1,
    so buckets 1..i are exactly the top g(i) = floor(iN/M) rows of the linear pacing function."""
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs (M) must be a positive integer, got {num_epochs!r}")
    if len(order) < num_epochs:
        raise ValueError(f"cannot cut {len(order)} rows into {num_epochs} non-empty difficulty buckets")
    bounds = [i * len(order) // num_epochs for i in range(num_epochs + 1)]
    return [order[bounds[i] : bounds[i + 1]] for i in range(num_epochs)]


def pacing_schedule(sizes: Mapping[str, int]) -> Schedule:
    """Phase i (1-based) samples uniformly from the rows of the first i buckets: weight ∝ size on buckets 1..i."""
    names = list(sizes)
    total = np.cumsum([sizes[name] for name in names])
    return [
        {name: (sizes[name] / total[phase] if b <= phase else 0.0) for b, name in enumerate(names)}
        for phase in range(len(names))
    ]


def curriculum_setup(
    skills: SkillSet,
    model: nn.Module,
    collator: Collator,
    num_epochs: int,
    anti: bool = False,
    batch_size: int = 64,
    autocast: Autocast | None = None,
) -> tuple[SkillSet, Schedule]:
    """The sample-level (anti)curriculum: a SkillSet of M difficulty buckets and its pacing schedule (M rounds).

    All training rows of `skills` (tokenized `Dataset`s with the same columns) are scored by `model` (the
    pretrained or current model), ranked, and cut into `num_epochs` buckets named `"difficulty_1"` (easiest;
    hardest for `anti`) .. `"difficulty_M"`. The returned SkillSet trains on the buckets and keeps `skills`'
    validation data, so the evaluation skills are the original ones. Train it with `mixing="fixed"`,
    `fixed_weights=schedule` and `rounds=num_epochs`. The scoring runs under `autocast` (see [`sample_losses`]).
    """
    import datasets

    from .skills import SkillSet

    parts = []
    for name in skills.train_skills:
        data = skills.train(name)
        if not isinstance(data, datasets.Dataset):
            raise ValueError(f"skill {name!r}: curriculum ranking needs map-style Datasets, not {type(data).__name__}")
        parts.append(data)
    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts)]
    pool = datasets.concatenate_datasets([p.select_columns(shared) for p in parts])
    order = difficulty_order(sample_losses(model, pool, collator, batch_size, autocast), anti=anti)
    buckets = {f"difficulty_{i + 1}": pool.select(rows) for i, rows in enumerate(pacing_buckets(order, num_epochs))}
    validation = {name: skills.validation(name) for name in skills.eval_skills}
    return SkillSet(buckets, validation), pacing_schedule({name: len(data) for name, data in buckets.items()})


def skill_losses(
    skills: SkillSet, model: nn.Module, collator: Collator, batch_size: int = 64, autocast: Autocast | None = None
) -> dict[str, float]:
    """Each training skill's average per-row loss under `model` (the group score of Varshney et al.)."""
    return {
        name: float(sample_losses(model, skills.train(name), collator, batch_size, autocast).mean())
        for name in skills.train_skills
    }


def _apportion(lengths: np.ndarray, rounds: int) -> np.ndarray:
    """Rounds per phase, proportional to `lengths`: one each, then one at a time to the phase furthest below its
    share (exact whenever the shares are whole numbers)."""
    quotas = rounds * lengths / lengths.sum()
    counts = np.ones(len(lengths), dtype=int)
    for _ in range(rounds - len(lengths)):
        counts[np.argmax(quotas - counts)] += 1
    return counts


def skill_curriculum_schedule(order: Sequence[str], rounds: int, frac: float = 0.4) -> Schedule:
    """Varshney et al.'s group curriculum over skills in `order`, as a `rounds`-long schedule.

    Phase i (0-based, one per skill) trains on skill `order[i]` with weight 1 and on each earlier skill with
    weight `frac`; a last phase trains on all skills uniformly. As in the reference implementation, phase i
    lasts in proportion to the data it reads, 1 + i * frac groups, and the last phase len(order) groups; those
    lengths are apportioned over `rounds` equal rounds (at least one round per phase, so rounds >= k + 1).
    """
    order = list(order)
    k = len(order)
    if not k or len(set(order)) != k:
        raise ValueError(f"order must list distinct skills, got {order}")
    if not 0 <= frac <= 1:
        raise ValueError(f"frac must be in [0, 1], got {frac}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < k + 1:
        raise ValueError(
            f"the skill curriculum has {k + 1} phases (one per skill, then all): rounds must be >= {k + 1}"
        )
    phases = []
    for i, current in enumerate(order):
        weights = {name: (frac if j < i else 0.0) for j, name in enumerate(order)}
        weights[current] = 1.0
        phases.append(weights)
    phases.append(dict.fromkeys(order, 1.0))
    lengths = np.array([1 + i * frac for i in range(k)] + [k], dtype=np.float64)
    schedule = []
    for weights, count in zip(phases, _apportion(lengths, rounds), strict=True):
        total = sum(weights.values())
        schedule += [{name: w / total for name, w in weights.items()} for _ in range(count)]
    return schedule


def skill_curriculum_setup(
    skills: SkillSet,
    model: nn.Module,
    collator: Collator,
    rounds: int,
    anti: bool = False,
    frac: float = 0.4,
    batch_size: int = 64,
    autocast: Autocast | None = None,
) -> tuple[list[str], Schedule]:
    """Skill-(anti)curriculum: the skills ranked by `model`'s average loss on their training rows (easiest first;
    hardest first for `anti`) and the `rounds`-long schedule of `skill_curriculum_schedule` over that order."""
    scores = skill_losses(skills, model, collator, batch_size, autocast)
    names = list(skills.train_skills)
    order = [names[i] for i in difficulty_order([scores[n] for n in names], anti=anti)]
    return order, skill_curriculum_schedule(order, rounds, frac)


def curriculum_baseline(
    name: str,
    skills: SkillSet,
    model: nn.Module,
    collator: Collator,
    rounds: int,
    frac: float = 0.4,
    batch_size: int = 64,
    autocast: Autocast | None = None,
) -> tuple[SkillSet, Schedule]:
    """Any of `CURRICULA` by name: the SkillSet to train on and its `rounds`-long schedule for `mixing="fixed"`.

    `"curriculum"`/`"anticurriculum"` use M = `rounds` pacing epochs and return the difficulty-bucket SkillSet;
    `"skill_curriculum"`/`"skill_anticurriculum"` return `skills` itself (train it from a skill-stratified pool).
    """
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; choose one of {', '.join(CURRICULA)}")
    anti = name.endswith("anticurriculum")
    if name.startswith("skill_"):
        return skills, skill_curriculum_setup(skills, model, collator, rounds, anti, frac, batch_size, autocast)[1]
    return curriculum_setup(skills, model, collator, rounds, anti, batch_size, autocast)


# ----- the curricula as registered mixers ----------------------------------------------------------------------------


class _ScoredScheduleMixer(FixedMixer):
    """A `FixedMixer` whose schedule comes from ranking the training data by the model's loss, once, at setup."""

    anti: ClassVar[bool] = False
    settings_required: ClassVar[Mapping[str, str]] = {}  # the schedule is computed, not given

    @classmethod
    def _ranked(cls, setup: MixerSetup, rank: Callable[..., Any]) -> Any:
        """`rank` (a `*_setup` function of this module) applied to the setup's data, model and rounds."""
        if setup.skills is None or setup.model is None or setup.collator is None or setup.rounds is None:
            raise ValueError(
                f"mixing={cls.name!r} ranks the training data by the model's loss: build it with SkillItTrainer "
                "(which passes the model, the data and the collator), not make_mixer"
            )
        return rank(
            setup.skills,
            setup.model,
            setup.collator,
            setup.rounds,
            anti=cls.anti,
            batch_size=setup.batch_size,
            autocast=setup.autocast,
        )

    def state_dict(self) -> dict[str, Any]:
        # The schedule came from the model before training: a resumed run must keep it, not re-rank.
        return {**super().state_dict(), "schedule": [weights.tolist() for weights in self._schedule]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, "schedule")
        self._schedule = [np.asarray(weights, dtype=np.float64) for weights in state["schedule"]]
        super().load_state_dict(state)


@register_mixer
class SkillCurriculumMixer(_ScoredScheduleMixer):
    """`mixing="skill_curriculum"`: Varshney et al.'s skill curriculum (easiest skill first), see
    [`skill_curriculum_setup`]; needs `rounds >= k + 1`."""

    name = "skill_curriculum"

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> SkillCurriculumMixer:
        _, schedule = cls._ranked(setup, skill_curriculum_setup)
        return cls(setup.train_skills, schedule=schedule)


@register_mixer
class SkillAnticurriculumMixer(SkillCurriculumMixer):
    """`mixing="skill_anticurriculum"`: the skill curriculum, hardest skill first."""

    name = "skill_anticurriculum"
    anti = True


@register_mixer
class CurriculumMixer(_ScoredScheduleMixer):
    """`mixing="curriculum"`: the sample-level curriculum with `rounds` pacing epochs, see [`curriculum_setup`].

    It trains on difficulty buckets instead of the data's skills: `prepare` replaces the training skills with the
    buckets `difficulty_1..M` (the validation skills stay), and the mixer's schedule paces them.
    """

    name = "curriculum"

    @classmethod
    def prepare(cls, setup: MixerSetup) -> MixerSetup:
        """The setup with the difficulty buckets as training skills and their pacing schedule as fixed weights."""
        buckets, schedule = cls._ranked(setup, curriculum_setup)
        return setup.replace(
            skills=buckets,
            train_skills=buckets.train_skills,
            train_sizes=buckets.train_sizes(),
            graph=None,
            fixed_weights=schedule,
        )

    @classmethod
    def from_setup(cls, setup: MixerSetup) -> CurriculumMixer:
        if setup.fixed_weights is None or setup.train_skills != setup.skills.train_skills:
            setup = cls.prepare(setup)
        return cls(setup.train_skills, schedule=setup.fixed_weights)


@register_mixer
class AnticurriculumMixer(CurriculumMixer):
    """`mixing="anticurriculum"`: the sample-level curriculum, hardest bucket first."""

    name = "anticurriculum"
    anti = True
