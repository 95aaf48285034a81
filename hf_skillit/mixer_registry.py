"""The registry of mixers: name -> mixer class, what a mixer is ([`Mixer`]), and the checks that a mixer can run
on the inputs it is given.

Every way of choosing a mixture goes through here: `SkillItConfig(mixing=...)` checks the name and the settings the
mixer requires, `SkillItTrainer` and the recipes check the graph and the targets with [`check_mixer_inputs`] and
build the mixer with its class's `from_setup`, and `hf_skillit.mixing.make_mixer` builds one from a graph alone.

A mixer class declares:

- `name`: its registry name (`mixing: <name>` in a config or a recipe);
- `needs_graph` (default False): whether it is meaningless without a skills graph;
- `settings_required` (default none): `SkillItConfig` settings it cannot do without, each with a hint;
- `from_setup(setup: MixerSetup)`: a classmethod building the mixer from the graph, settings and sizes.

A mixer may also run *probe phases* inside each round ([`ProbingMixer`], Aioli's: `hf_skillit.aioli`): short
sub-phases on mixtures it chooses, each followed by an evaluation of the skills, before the round's own mixture is
decided. The trainer runs them with the guarantees of rounds (`hf_skillit.probing`); a mixer without `probes` runs
exactly as before.

This module imports no mixer: the mixers import it to register, so the dependencies run one way
(`tests/test_import_cycles.py`). The built-in mixers (`hf_skillit.mixing`) and the curricula
(`hf_skillit.curriculum`) register when their module is imported; `hf_skillit.config` imports both, so wherever a
`SkillItConfig` exists (the trainers, the recipes) every built-in name is known. [`register_mixer`] adds a class of
your own:

    @register_mixer
    class Greedy(FixedMixer):
        name = "greedy"
        ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .graph import SkillsGraph

__all__ = [
    "CONFIG_SETTINGS",
    "MIXER_NAMES",
    "Mixer",
    "MixerSetup",
    "Probe",
    "ProbingMixer",
    "build_mixer",
    "check_mixer_inputs",
    "check_mixer_settings",
    "is_probing",
    "mixer_class",
    "mixer_names",
    "register_mixer",
    "unregister_mixer",
]


Losses = Sequence[float] | Mapping[str, float]


@runtime_checkable
class Mixer(Protocol):
    """What the trainer needs from a mixer (the object a registered class's `from_setup` returns)."""

    train_skills: tuple[str, ...]
    eval_skills: tuple[str, ...]

    def initial(self) -> np.ndarray: ...

    def update(self, eval_losses: Losses) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Probe:
    """One probe phase of a round: `steps` optimizer steps drawn from `mixture` (over the training skills, summing
    to 1), then an evaluation of the skills. `label` names it in the trajectory (Aioli: the probed skill)."""

    mixture: np.ndarray
    steps: int
    label: str | None = None


@runtime_checkable
class ProbingMixer(Mixer, Protocol):
    """A [`Mixer`] that runs probe phases at the start of every round (`hf_skillit.probing` runs them).

    - `probe_steps`: every probe's steps are a multiple of it; the trainer's data unit is
      gcd(`probe_steps`, steps per round) steps, so every probe boundary falls on a unit boundary.
    - `probes(round_index)`: the probes of round `round_index` (0-based), asked once, at the round's start.
    - `observe_probe(index, eval_losses)`: the evaluation after probe `index` of the current round.
    - `after_probes()`: the mixture of the rest of the round (the round's `p`), asked after the last probe.
    - `update(eval_losses)` at the round's end returns the mixture the next round starts from (replaced by
      `after_probes()` once its probes are done, if it has any).
    - optional `round_record()`: extra keys for the round's trajectory record (Aioli: the estimated `A`).
    """

    probe_steps: int

    def probes(self, round_index: int) -> Sequence[Probe]: ...

    def observe_probe(self, index: int, eval_losses: Losses) -> None: ...

    def after_probes(self) -> np.ndarray: ...


def is_probing(mixer: Any) -> bool:
    """Whether `mixer` schedules probe phases (has a callable `probes`)."""
    return callable(getattr(mixer, "probes", None))


class Skills(Protocol):
    """What a mixer is built from: the training skills and their rows (None for a stream). A `SkillSet`, or the dry
    run's `hf_skillit.recipes.plan.SkillSizes`, which holds the counts without the data."""

    train_skills: Sequence[str]

    def train_sizes(self) -> Mapping[str, int | None]: ...


# ----- the setup --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixerSetup:
    """Everything a mixer class may build itself from (`from_setup`).

    Args:
        train_skills: the training skills, in order: the entries of every mixture.
        graph: the skills graph over `train_skills` (rows in that order), or None when none was given.
        train_sizes: rows per training skill (None for an `IterableDataset`).
        eta, window, window_reduce, fixed_weights, target_skills, rounds, loss_normalization,
            mixture_smoothing, seed, steps_per_round, aioli_*: the `SkillItConfig` settings of the same names
            (`CONFIG_SETTINGS`).
        skills, model, collator, batch_size: the (tokenized) `SkillSet`, the model, the batch collator and the
            evaluation batch size, for mixers that score the data with the model (the curricula); None in
            `make_mixer`.
        autocast: the context the scoring forward passes run under, the run's mixed precision (the trainer passes
            `accelerator.autocast`: before training the model's forward is not yet wrapped by accelerate); None:
            the model's own precision.
    """

    train_skills: tuple[str, ...]
    graph: SkillsGraph | None = None
    train_sizes: Mapping[str, int | None] | None = None
    eta: float = 0.5
    window: int = 3
    fixed_weights: Any = None
    target_skills: Sequence[str] | None = None
    rounds: int | None = None
    skills: Any = None
    model: Any = None
    collator: Any = None
    batch_size: int = 64
    window_reduce: str = "sum"  # these last: positional construction (make_mixer) stays as it was
    loss_normalization: str = "none"
    mixture_smoothing: float = 0.0
    seed: int = 0
    steps_per_round: int | None = None
    aioli_probe_steps: int = 5
    aioli_sweeps: int = 1
    aioli_one_hot_factor: float = 1.0
    aioli_ema: float | None = None
    aioli_normalize: bool = True
    aioli_diagonal: bool = False
    autocast: Any = None

    def targeted_graph(self) -> SkillsGraph:
        """The graph (all ones when there is none) restricted to the target columns, if any (fine-tuning)."""
        graph = self.graph if self.graph is not None else SkillsGraph.complete(self.train_skills)
        return graph if self.target_skills is None else graph.restrict(self.target_skills)

    def replace(self, **changes: Any) -> MixerSetup:
        return replace(self, **changes)


CONFIG_SETTINGS = (
    "eta",
    "window",
    "window_reduce",
    "fixed_weights",
    "target_skills",
    "rounds",
    "loss_normalization",
    "mixture_smoothing",
    "seed",
    "steps_per_round",
    "aioli_probe_steps",
    "aioli_sweeps",
    "aioli_one_hot_factor",
    "aioli_ema",
    "aioli_normalize",
    "aioli_diagonal",
)
"""The `SkillItConfig` settings that [`build_mixer`] copies into a [`MixerSetup`] by name."""

_REGISTRY: dict[str, type] = {}


def register_mixer(cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a mixer class under its `name`, as a decorator (`@register_mixer`) or a call (`register_mixer(C)`).

    The class needs a string `name`, a classmethod `from_setup(setup: MixerSetup)` returning an object with the
    [`Mixer`] protocol, and may set `needs_graph` (default False) and `settings_required`. Afterwards
    `SkillItConfig(mixing=name)` and a recipe's `training.mixing: name` select it. A name already taken raises,
    unless `replace=True`.
    """

    def register(cls: type) -> type:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a class attribute `name` (a non-empty string) to be registered")
        if not callable(getattr(cls, "from_setup", None)):
            raise ValueError(f"{cls.__name__} needs a classmethod from_setup(setup: MixerSetup) to be registered")
        if name in _REGISTRY and _REGISTRY[name] is not cls and not replace:
            raise ValueError(f"a mixer named {name!r} is already registered ({_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls

    return register if cls is None else register(cls)


def unregister_mixer(name: str) -> None:
    """Remove a registered mixer (e.g. one a test registered)."""
    _REGISTRY.pop(name, None)


def mixer_names() -> tuple[str, ...]:
    """Every registered mixer name, in registration order (the modules imported so far: see the module docstring)."""
    return tuple(_REGISTRY)


def mixer_class(name: str) -> type:
    """The mixer class registered as `name`; a ValueError listing the valid names otherwise."""
    registry = _REGISTRY
    if name not in registry:
        raise ValueError(f"unknown mixer {name!r}; valid names: {list(registry)}")
    return registry[name]


class _MixerNames(Sequence):
    """A live view of the registered names, for `SkillItConfig.mixing`'s `choices` (argparse checks `in`)."""

    def __getitem__(self, index):  # type: ignore[override]
        return mixer_names()[index]

    def __len__(self) -> int:
        return len(mixer_names())

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __repr__(self) -> str:
        return repr(mixer_names())


MIXER_NAMES: Sequence[str] = _MixerNames()


def check_mixer_settings(name: str, settings: Any) -> type:
    """The class of mixer `name`, after checking that `settings` (a `SkillItConfig` or a [`MixerSetup`]) has every
    setting the mixer requires."""
    cls = mixer_class(name)
    for key, hint in getattr(cls, "settings_required", {}).items():
        if getattr(settings, key, None) is None:
            raise ValueError(f"mixing={name!r} needs {key} ({hint})")
    return cls


def check_mixer_inputs(
    name: str,
    graph: SkillsGraph | None,
    train_skills: Sequence[str],
    target_skills: Sequence[str] | None = None,
    *,
    graph_hint: str = "pass graph= or set graph_path",
) -> type:
    """Check that mixer `name` can run on this graph and these targets, before any data or model is loaded.

    A mixer that `needs_graph` gets a graph; fine-tuning targets must be evaluation skills of the graph (of the
    all-ones graph over `train_skills` when there is none) and, for such a mixer, each needs a training skill with a
    positive edge into it. `graph_hint` says how to give a graph, in the caller's terms. Returns the class.
    """
    cls = mixer_class(name)
    if graph is None and getattr(cls, "needs_graph", False):
        free = [n for n, c in _REGISTRY.items() if not getattr(c, "needs_graph", False)]
        raise ValueError(
            f"mixing={name!r} needs a skills graph: {graph_hint} (or use a mixing that needs none: {', '.join(free)};"
            " no_graph is the identity-graph ablation)"
        )
    if target_skills:
        known = graph if graph is not None else SkillsGraph.complete(train_skills)
        known.check_targets(target_skills, need_prerequisites=getattr(cls, "needs_graph", False))
    return cls


def build_mixer(
    args: Any,
    skills: Skills,
    graph: SkillsGraph | None,
    model: Any = None,
    collator: Any = None,
    graph_hint: str = "pass graph= or set graph_path",
    autocast: Any = None,
) -> tuple[Any, Mixer]:
    """The registered mixer `args.mixing` for `skills` and `graph`, and the skills it trains on (`skills`, unless
    the mixer prepares others: the sample-level curricula score the rows with `model` into difficulty buckets, a
    `SkillSet`).

    `args` is a `SkillItConfig` or the dry run's settings (read for `mixing`, `per_device_eval_batch_size` and the
    `CONFIG_SETTINGS`; not annotated as one, because `hf_skillit.config` imports this module)."""
    cls = check_mixer_inputs(args.mixing, graph, skills.train_skills, args.target_skills, graph_hint=graph_hint)
    setup = MixerSetup(
        train_skills=skills.train_skills,
        graph=graph,
        train_sizes=skills.train_sizes(),
        skills=skills,
        model=model,
        collator=collator,
        batch_size=args.per_device_eval_batch_size,
        autocast=autocast,
        **{name: getattr(args, name) for name in CONFIG_SETTINGS},
    )
    if callable(prepare := getattr(cls, "prepare", None)):
        setup = prepare(setup)
    return setup.skills, cls.from_setup(setup)
