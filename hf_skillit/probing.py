"""Probe phases inside rounds: what the trainer does for a mixer that schedules them ([`ProbingMixer`], Aioli's).

A probing mixer asks, at each round's start, for short phases on mixtures of its choosing (`probes(round)`: a
mixture and a number of steps each), with an evaluation of the skills after each (`observe_probe`); after the last
one it decides the mixture of the rest of the round (`after_probes`). Probe steps are training steps of the run:
the same optimizer, schedule and step counter, counted in `max_steps`.

The guarantees of rounds carry over because of how the data is laid out (`hf_skillit.trainer`'s module docstring
explains them for rounds). The Trainer's "epoch" is one *data unit* of u steps, u = gcd(`probe_steps`, steps per
round): every probe boundary and every round boundary is a unit boundary. Each unit's stream is built when the
Trainer starts that epoch (`set_epoch(unit)`), from the mixture of the phase holding the unit, so the DataLoader,
which reads one batch ahead but never across an epoch end, cannot read a batch of the round's main phase before
`after_probes()` has decided its mixture. A unit's draws are a deterministic function of (seed, unit index, the
skills' positions at the unit's start, mixture); the positions move on at every unit end by the unit's counted
samples (summed across processes), and a checkpoint holds them with the probes of the round, the finished probes'
records and the mixer's state. A resume inside a probe therefore rebuilds the same unit, the Trainer drops its
trained batches, and the round continues as if uninterrupted.

A mixer without `probes` has u = the steps of a round: a unit is a round, with the same index, the same draws and
the same seeds as before probe phases existed (the trajectories of every other mixer are unchanged, compared with
runs saved before the change).

The trajectory keeps one record per round (`hf_skillit.rundir`): `p` is the mixture of the round's main phase,
`samples`/`tokens` the whole round's (probes included); a probing round adds `probes`, one record per probe
(`probe`, `label`, `mixture`, `steps`, `global_step`, `samples`, `tokens`, `eval_loss`), and what the mixer's
`round_record()` returns (Aioli: the estimated `A`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .mixer_registry import Mixer, is_probing

__all__ = ["ProbePhasesMixin", "check_probes", "probe_ending_at", "unit_steps"]

logger = logging.getLogger(__name__)


def unit_steps(mixer: Mixer, args: Any) -> int:
    """The steps of one data unit (the Trainer's epoch): gcd(`probe_steps`, steps per round) for a probing mixer,
    a whole round otherwise. `args` is the run's `SkillItConfig`; its `"epoch"` strategies then act every unit."""
    if not is_probing(mixer):
        return args.steps_per_round
    steps = mixer.probe_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{type(mixer).__name__}.probe_steps must be an integer >= 1, got {steps!r}")
    unit = math.gcd(steps, args.steps_per_round)
    per_epoch = [
        k for k in ("save_strategy", "logging_strategy", "eval_strategy") if getattr(args, k, None) == "epoch"
    ]
    if per_epoch and unit < args.steps_per_round:
        logger.warning(
            "%s='epoch' acts at every data unit of %d steps (the Trainer's epoch with probe phases), not every "
            "round of %d: use 'steps' with a multiple of the round",
            "/".join(per_epoch),
            unit,
            args.steps_per_round,
        )
    return unit


def check_probes(probes: Sequence[Any], train_skills: Sequence[str], unit: int, steps_per_round: int) -> list[dict]:
    """A round's probes (`Probe` objects) as the JSON records the round state keeps; a ValueError naming the probe
    unless each is a whole number of units on a mixture over the training skills, and together they leave the
    round at least one step of its own."""
    records, total = [], 0
    for index, probe in enumerate(probes):
        mixture = np.asarray(probe.mixture, dtype=np.float64)
        steps = probe.steps
        where = f"probe {index + 1} ({probe.label or 'unlabelled'})"
        if mixture.shape != (len(train_skills),) or not np.isfinite(mixture).all() or (mixture < 0).any():
            raise ValueError(f"{where}: its mixture must be {len(train_skills)} finite weights >= 0, got {mixture}")
        if abs(mixture.sum() - 1) > 1e-9:
            raise ValueError(f"{where}: its mixture sums to {mixture.sum()}, not 1")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or steps % unit:
            raise ValueError(f"{where}: steps={steps!r} must be a positive multiple of the {unit}-step data unit")
        total += steps
        records.append({"label": probe.label, "mixture": mixture.tolist(), "steps": steps})
    if total >= steps_per_round:
        raise ValueError(f"the probes take {total} of the {steps_per_round} steps of a round: none is left for p")
    return records


def probe_ending_at(probes: Sequence[dict], step_in_round: int) -> int | None:
    """The index of the probe whose last step is step `step_in_round` of the round (1-based), or None."""
    end = 0
    for index, probe in enumerate(probes):
        end += probe["steps"]
        if end == step_in_round:
            return index
        if end > step_in_round:
            return None
    return None


class ProbePhasesMixin:
    """The trainer's side of probe phases, part of `hf_skillit.trainer.SkillItTrainerMixin` (whose attributes it
    reads: `args`, `mixer`, `rounds`, `state`, `skills`, `_sizes`, `_unit`)."""

    def _begin_round_probes(self) -> None:
        """Ask a probing mixer for the probes of the round about to start (`rounds.rounds_done`)."""
        rounds = self.rounds
        rounds.probe_records = []
        if not is_probing(self.mixer) or rounds.rounds_done >= self.args.rounds:
            rounds.probes = []
            return
        probes = self.mixer.probes(rounds.rounds_done)
        rounds.probes = check_probes(probes, self.skills.train_skills, self._unit, self.args.steps_per_round)

    def _probabilities_for_unit(self, unit: int) -> np.ndarray:
        """The mixture data unit `unit` draws from: its probe's, or its round's."""
        rounds = self.rounds
        round_index, index_in_round = divmod(unit, self.args.steps_per_round // self._unit)
        if round_index == rounds.rounds_done:
            step = index_in_round * self._unit
            for probe in rounds.probes:
                if step < probe["steps"]:
                    return np.asarray(probe["mixture"], dtype=np.float64)
                step -= probe["steps"]
        return rounds.p_history[round_index]

    def end_unit(self) -> None:
        """A data unit inside a round ended (the `on_step_end` of its last step; every process): the stream moves
        on by the unit's samples; if a probe ended, the skills are evaluated and the mixer observes them, and
        after the last probe it sets the round's mixture."""
        rounds, names = self.rounds, self.skills.train_skills
        counts, tokens = self._round_totals()  # one collective, every process
        before = [sum(r["samples"][s] for r in rounds.probe_records) for s in names]
        before_tokens = [sum(r["tokens"][s] for r in rounds.probe_records) for s in names]
        rounds.advance_unit(counts, tokens, self._sizes)
        index = probe_ending_at(rounds.probes, self.state.global_step % self.args.steps_per_round)
        if index is None:
            return
        losses = self.evaluate_skills()
        self.mixer.observe_probe(index, {s: losses[s] for s in self.mixer.eval_skills})
        probe = rounds.probes[index]
        rounds.probe_records.append(
            {
                "probe": index + 1,
                "label": probe["label"],
                "mixture": dict(zip(names, probe["mixture"], strict=True)),
                "steps": probe["steps"],
                "global_step": self.state.global_step,
                "samples": {s: c - b for s, c, b in zip(names, counts, before, strict=True)},
                "tokens": {s: c - b for s, c, b in zip(names, tokens, before_tokens, strict=True)},
                "eval_loss": losses,
            }
        )
        if index == len(rounds.probes) - 1:
            p = np.asarray(self.mixer.after_probes(), dtype=np.float64)
            if p.shape != (len(names),) or not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > 1e-9:
                raise ValueError(f"{type(self.mixer).__name__}.after_probes() returned {p}, not a mixture")
            rounds.p_history[rounds.rounds_done] = p

    def _probe_part_of_record(self) -> dict[str, Any]:
        """What a probing round adds to its trajectory record (see the module docstring)."""
        if not is_probing(self.mixer):
            return {}
        extra: dict[str, Any] = {"probes": self.rounds.probe_records}
        if callable(getattr(self.mixer, "round_record", None)):
            extra.update(self.mixer.round_record())
        return extra
