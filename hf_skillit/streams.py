"""The training stream: per-skill data streams interleaved with the round's mixture.

Each round is built afresh with `datasets.interleave_datasets(..., probabilities=p_t)`: a built dataset's
probabilities cannot be changed through any public API. The interleave mixes *indices* (skill, row), and
rows are fetched from the skills' datasets in chunks as the stream is read, so a rebuild is cheap and the
stream stays far faster than a training step (see benchmarks/overhead.py).

Every skill keeps its position across rounds: a rebuild continues each skill's shuffled order where the
last round left it, and a skill whose rows are used up starts a new epoch on a fresh permutation. So no
row of a skill is seen twice before all of that skill's rows were seen once.

A round is a deterministic function of (seed, round index, positions at the round start, p_t). That is
what makes resuming exact: the Trainer replays the resumed round's first batches and drops them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable

SKILL_KEY = "skillit_skill"
"""Key carrying each training row's skill index through the collator to `training_step`."""

_FETCH_ROWS = 1024


@dataclass
class SkillPosition:
    """Where one skill's stream stands: `offset` rows into the permutation of `epoch`."""

    epoch: int = 0
    offset: int = 0


@dataclass
class StreamState:
    """Positions of every skill at the start of the current round."""

    positions: list[SkillPosition] = field(default_factory=list)

    @classmethod
    def fresh(cls, num_skills: int) -> StreamState:
        return cls([SkillPosition() for _ in range(num_skills)])

    def advance(self, counts: Sequence[int], sizes: Sequence[int | None]) -> None:
        """Move each skill forward by the number of rows drawn from it, wrapping into new epochs."""
        for position, count, size in zip(self.positions, counts, sizes, strict=True):
            total = position.offset + int(count)
            if size is None:  # a streaming skill is read in its own order, without epochs of ours
                position.offset = total
            else:
                position.epoch += total // size
                position.offset = total % size

    def to_dict(self) -> dict[str, Any]:
        return {"positions": [[p.epoch, p.offset] for p in self.positions]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> StreamState:
        return cls([SkillPosition(int(e), int(o)) for e, o in state["positions"]])


def epoch_permutation(seed: int, skill_index: int, epoch: int, size: int) -> np.ndarray:
    """The order in which a map-style skill's rows are read in one epoch."""
    return np.random.default_rng([seed, skill_index, epoch]).permutation(size)


def next_rows(seed: int, skill_index: int, size: int | None, start: SkillPosition, count: int) -> np.ndarray:
    """The next `count` rows of a skill's stream from `start`, crossing into new epochs as needed."""
    if size is None:
        return np.arange(start.offset, start.offset + count, dtype=np.int64)
    parts, epoch, offset, needed = [], start.epoch, start.offset, count
    while needed > 0:
        part = epoch_permutation(seed, skill_index, epoch, size)[offset : offset + needed]
        parts.append(part)
        needed -= len(part)
        epoch, offset = epoch + 1, 0
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _draw_bound(num_samples: int, p: float) -> int:
    """A count that Binomial(num_samples, p) exceeds with negligible probability (retried if it does)."""
    if p <= 0:
        return 0
    mean = num_samples * p
    return min(num_samples, int(np.ceil(mean + 8 * np.sqrt(mean * (1 - p) + 1) + 8)))


def round_index_stream(
    sizes: Sequence[int | None],
    probabilities: Sequence[float],
    state: StreamState,
    seed: int,
    round_index: int,
    num_samples: int,
) -> datasets.Dataset:
    """The `num_samples` (skill, row) pairs of one round, mixed by `datasets.interleave_datasets`.

    Each source holds the next rows of one skill's stream, enough for the round with overwhelming
    probability. Which skill is drawn at each position depends on the interleave's seeded RNG alone, not on
    the sources' lengths, so the rare retry with longer sources extends the sequence without changing it.
    """
    probabilities = [float(p) for p in probabilities]
    mixing_seed = int(np.random.default_rng([seed, round_index]).integers(2**31))
    scale = 1
    while True:
        sources = []
        for skill, (size, position, p) in enumerate(zip(sizes, state.positions, probabilities, strict=True)):
            rows = next_rows(seed, skill, size, position, min(num_samples, _draw_bound(num_samples, p) * scale))
            table = pa.table({"skill": np.full(len(rows), skill, dtype=np.int64), "row": rows})
            # An explicit fingerprint skips hashing the table, which dominates a rebuild with many skills.
            fingerprint = f"skillit-{seed}-{round_index}-{skill}-{scale}"
            sources.append(datasets.Dataset(InMemoryTable(table), fingerprint=fingerprint))
        mixed = datasets.interleave_datasets(
            sources, probabilities=probabilities, seed=mixing_seed, stopping_strategy="first_exhausted"
        )
        if len(mixed) >= num_samples:
            return mixed.select(range(num_samples))
        scale *= 2


class _StreamingSkillReader:
    """Sequential reader of a streaming (`IterableDataset`) skill that survives across rounds."""

    def __init__(self, dataset: datasets.IterableDataset, name: str):
        self.dataset = dataset
        self.name = name
        self._iterator: Iterator[dict] | None = None
        self._next_row = 0

    def read(self, row: int) -> dict:
        if self._iterator is None or row != self._next_row:
            # A new process (resume) or rows owned by another worker: reopen the stream at `row`.
            self._iterator = iter(self.dataset.skip(row) if row else self.dataset)
            self._next_row = row
        try:
            example = next(self._iterator)
        except StopIteration:
            raise RuntimeError(
                f"streaming skill {self.name!r} ended after {row} rows; make it endless with `.repeat(None)` "
                "or pass a map-style Dataset, which starts a new shuffled epoch when used up"
            ) from None
        self._next_row += 1
        return dict(example)


class MixtureStream(torch.utils.data.IterableDataset):
    """The training dataset handed to the DataLoader: one round of the mixture per "epoch".

    `set_epoch(r)` (called by Trainer and Accelerate before each epoch) selects round r, and `__len__` is one
    round's number of samples over all processes, so the Trainer's epochs are exactly Skill-It rounds.
    `probabilities_for_round(r)` is called when round r starts, after the previous round's update.
    """

    def __init__(
        self,
        train_sets: Sequence[datasets.Dataset | datasets.IterableDataset],
        probabilities_for_round: Callable[[int], Sequence[float]],
        state: StreamState,
        seed: int,
        samples_per_round: int,
        batch_size: int,
        skill_names: Sequence[str] | None = None,
    ):
        self.train_sets = list(train_sets)
        self.sizes: list[int | None] = [len(ds) if isinstance(ds, datasets.Dataset) else None for ds in train_sets]
        self.probabilities_for_round = probabilities_for_round
        self.state = state
        self.seed = seed
        self.samples_per_round = samples_per_round
        self.batch_size = batch_size
        self.skill_names = list(skill_names) if skill_names else [str(i) for i in range(len(self.train_sets))]
        self.round_index = 0
        self._readers: dict[int, _StreamingSkillReader] = {}

    def __len__(self) -> int:
        return self.samples_per_round

    def set_epoch(self, epoch: int) -> None:
        self.round_index = int(epoch)

    def index_stream(self) -> datasets.Dataset:
        """This round's (skill, row) pairs, without fetching any data."""
        return round_index_stream(
            self.sizes,
            self.probabilities_for_round(self.round_index),
            self.state,
            self.seed,
            self.round_index,
            self.samples_per_round,
        )

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        num_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        pairs = self.index_stream()
        chunk = self.batch_size * max(1, _FETCH_ROWS // self.batch_size)
        for start in range(0, len(pairs), chunk):
            columns = pairs[start : start + chunk]
            # Worker w owns batches w, w + W, ...: the DataLoader reads workers round-robin, so order is kept.
            owned = [
                (skill, row)
                for slot, (skill, row) in enumerate(zip(columns["skill"], columns["row"], strict=True))
                if ((start + slot) // self.batch_size) % num_workers == worker_id
            ]
            yield from self._fetch(owned)

    def _fetch(self, pairs: list[tuple[int, int]]) -> list[dict]:
        rows: list[dict] = [{} for _ in pairs]
        by_skill: dict[int, list[int]] = {}
        for slot, (skill, _) in enumerate(pairs):
            by_skill.setdefault(skill, []).append(slot)
        for skill, slots in by_skill.items():
            if self.sizes[skill] is None:
                reader = self._readers.setdefault(
                    skill, _StreamingSkillReader(self.train_sets[skill], self.skill_names[skill])
                )
                fetched = [reader.read(pairs[slot][1]) for slot in slots]
            else:
                columns = self.train_sets[skill][[pairs[slot][1] for slot in slots]]
                fetched = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            for slot, row in zip(slots, fetched, strict=True):
                row[SKILL_KEY] = skill
                rows[slot] = row
        return rows
