"""The training stream: per-skill data streams interleaved with the round's mixture.

Each round is built afresh from p_t: its (skill, row) pairs are the draws of
`datasets.interleave_datasets(..., probabilities=p_t, stopping_strategy="first_exhausted")` over the skills' next
rows, computed directly in numpy (`round_draws`; `tests/test_streams.py` holds the interleave itself as the
reference the draws are checked against). Rows are fetched in chunks as the stream is read, token columns as numpy
views of the Arrow buffers (`_RowStore`), so a rebuild is cheap (rates in benchmarks/RESULTS.md, from
`benchmarks/overhead/overhead.py --stream-only`).

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


def next_rows(
    seed: int,
    skill_index: int,
    size: int | None,
    start: SkillPosition,
    count: int,
    cache: dict[int, tuple[int, np.ndarray]] | None = None,
) -> np.ndarray:
    """The next `count` rows of a skill's stream from `start`, crossing into new epochs as needed.

    `cache` (skill -> (epoch, permutation)) keeps each skill's current permutation across calls: drawing it
    (a fresh seeded generator) costs more than the rest of a round when there are many skills.
    """
    if size is None:
        return np.arange(start.offset, start.offset + count, dtype=np.int64)
    parts, epoch, offset, needed = [], start.epoch, start.offset, count
    while needed > 0:
        if cache is None:
            permutation = epoch_permutation(seed, skill_index, epoch, size)
        else:
            cached_epoch, permutation = cache.get(skill_index, (-1, None))
            if cached_epoch != epoch:
                permutation = epoch_permutation(seed, skill_index, epoch, size)
                cache[skill_index] = (epoch, permutation)
        part = permutation[offset : offset + needed]
        parts.append(part)
        needed -= len(part)
        epoch, offset = epoch + 1, 0
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def round_draws(
    sizes: Sequence[int | None],
    probabilities: Sequence[float],
    state: StreamState,
    seed: int,
    round_index: int,
    num_samples: int,
    cache: dict[int, tuple[int, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One round's `num_samples` (skill, row) pairs as numpy arrays: `skills[i]` is drawn from `probabilities`,
    `rows[i]` is that skill's next row (`next_rows` from its position in `state`).

    These are the pairs `datasets.interleave_datasets(sources, probabilities, seed=mixing_seed,
    stopping_strategy="first_exhausted")` yields when each source holds one skill's next rows and no source runs
    out: the interleave draws each position's source with `rng.choice(k, size=1000, p)` in blocks and takes each
    source's rows in order, so the j-th draw of skill s takes the j-th next row of s. Computing that directly skips
    what the interleave adds around it, mostly hashing the round's index list for the new dataset's fingerprint
    (`tests/test_streams.py` checks the two are equal).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)  # as interleave_datasets' choice converts them
    mixing_seed = int(np.random.default_rng([seed, round_index]).integers(2**31))
    rng = np.random.default_rng(mixing_seed)
    blocks = [rng.choice(len(sizes), size=1000, p=probabilities) for _ in range(-(-num_samples // 1000))]
    skills = np.concatenate(blocks)[:num_samples].astype(np.int64) if blocks else np.zeros(0, dtype=np.int64)
    rows = np.empty(num_samples, dtype=np.int64)
    order = np.argsort(skills, kind="stable")  # positions grouped by skill, in stream order within a skill
    bounds = np.searchsorted(skills[order], np.arange(len(sizes) + 1))
    for skill in np.flatnonzero(np.diff(bounds)).tolist():
        positions = order[bounds[skill] : bounds[skill + 1]]
        rows[positions] = next_rows(seed, skill, sizes[skill], state.positions[skill], len(positions), cache)
    return skills, rows


class _StreamingSkillReader:
    """Sequential reader of a streaming (`IterableDataset`) skill that survives across rounds.

    Rows are asked for in increasing order. A row further on is reached by reading on and dropping the rows in
    between (rows of other DataLoader workers, or of rounds this process did not read), never by reopening: an
    `IterableDataset.skip(n)` reads and drops n rows from the stream's start, so reopening at every gap would make
    reading grow with the square of the rows read. The stream is opened at `row` (one `skip`) only when the reader
    is new (a new process, a resume) or asked for an earlier row.
    """

    def __init__(self, dataset: datasets.IterableDataset, name: str):
        self.dataset = dataset
        self.name = name
        self._iterator: Iterator[dict] | None = None
        self._next_row = 0

    def read(self, row: int) -> dict:
        if self._iterator is None or row < self._next_row:
            self._iterator = iter(self.dataset.skip(row) if row else self.dataset)
            self._next_row = row
        while self._next_row < row:
            self._next(row)
        return dict(self._next(row))

    def _next(self, row: int) -> dict:
        try:
            example = next(self._iterator)
        except StopIteration:
            raise RuntimeError(
                f"streaming skill {self.name!r} ended after {self._next_row} rows (row {row} was asked for); make "
                "it endless with `.repeat(None)` or pass a map-style Dataset, which starts a new shuffled epoch "
                "when used up"
            ) from None
        self._next_row += 1
        return example


def _is_token_column(column: pa.ChunkedArray) -> bool:
    """A list-of-integers column without nulls: held as one flat numpy array and handed out as views."""
    kind = column.type
    return (
        (pa.types.is_list(kind) or pa.types.is_large_list(kind))
        and pa.types.is_integer(kind.value_type)
        and column.null_count == 0
        and all(chunk.values.null_count == 0 for chunk in column.chunks)
    )


def _stored(dataset: datasets.Dataset | datasets.IterableDataset) -> bool:
    """Whether `_RowStore` reads the skill: map-style without a format or transform (those apply on `__getitem__`)."""
    return isinstance(dataset, datasets.Dataset) and dataset.format["type"] is None


class _RowStore:
    """Every map-style skill's rows, addressed by one global row number, fetched a chunk at a time in numpy.

    Reading rows through `Dataset.__getitem__` converts every Arrow value to a Python object, which capped the
    stream's rate (benchmarks/RESULTS.md). Instead, a token column (a list of integers without nulls, such
    as `input_ids`, `attention_mask`, `labels`) is read as numpy views of the Arrow buffers themselves, one flat
    array per Arrow chunk, zero-copy (a memory-mapped dataset stays memory-mapped), and a row is handed out as a
    view `values[start:end]`. Only per-row bookkeeping is built here: for every row, which flat array holds it
    and where (12 bytes per row and token column, plus 8 for the row's physical index; the stream also keeps
    each skill's current permutation, 8 bytes a row: about 40 bytes a row for two token columns, 400 MB for 10M
    rows). Other columns (ids, strings, scalars) are read through Arrow for the rows of a chunk, as before.

    Local row `r` of skill `s` is global row `first[s] + r`; `physical[g]` is its row in the skills' Arrow
    tables laid end to end (a skill built with `select`/`filter`/`shuffle` reads its rows through an indices
    mapping).
    """

    def __init__(self, train_sets: Sequence[datasets.Dataset | datasets.IterableDataset]):
        tables, physical, first, base, n = [], [], [], 0, 0
        for ds in train_sets:
            first.append(n)
            if not _stored(ds):
                tables.append(None)
                continue
            table = ds.data.table
            tables.append(table.select(ds.format["columns"] or ds.column_names))
            mapping = ds._indices.column(0).to_numpy() if ds._indices is not None else np.arange(len(ds))
            physical.append(mapping.astype(np.int64) + base)
            base += table.num_rows
            n += len(ds)
        self.first = np.asarray(first, dtype=np.int64)
        self.physical = np.concatenate(physical) if physical else np.zeros(0, dtype=np.int64)
        self.tables = tables
        self.table_start = np.cumsum([0] + [0 if t is None else t.num_rows for t in tables])
        names = {name for table in tables if table is not None for name in table.column_names}
        self.token_columns = sorted(
            name
            for name in names
            if all(_is_token_column(t.column(name)) for t in tables if t is not None and name in t.column_names)
        )
        # Per token column: the flat arrays, and per physical row its array and [start, end) in it.
        self.segments: dict[str, list[np.ndarray]] = {}
        self.where: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name in self.token_columns:
            segments, which, starts, ends = [], [], [], []
            for table in tables:
                if table is None:
                    continue
                chunks = table.column(name).chunks if name in table.column_names else [None]
                for chunk in chunks:
                    if chunk is None:  # a skill without this column: empty rows (its rows do not get the key)
                        rows, offsets = table.num_rows, np.zeros(table.num_rows + 1, dtype=np.int32)
                        values = np.zeros(0, dtype=np.int64)
                    else:  # offsets stay int32 for `list` columns (int64 for `large_list`)
                        rows, offsets = len(chunk), chunk.offsets.to_numpy()
                        values = chunk.values.to_numpy(zero_copy_only=True)
                    which.append(np.full(rows, len(segments), dtype=np.int32))
                    starts.append(offsets[:-1])
                    ends.append(offsets[1:])
                    segments.append(values)
            self.segments[name] = segments
            self.where[name] = tuple(
                np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for parts in (which, starts, ends)
            )
        # Which skills carry each token column (the others' rows do not get the key), and each skill's other
        # columns (read through Arrow).
        self.carried = {
            name: np.asarray([t is not None and name in t.column_names for t in tables]) for name in self.token_columns
        }
        self.others = [() if t is None else tuple(c for c in t.column_names if c not in self.carried) for t in tables]
        self.has_others = any(self.others)

    def rows(self, skills: np.ndarray, rows: np.ndarray) -> list[dict[str, Any]]:
        """The rows (`rows[i]` of skill `skills[i]`, all map-style) as dicts: token columns as numpy views, the
        skill index under `SKILL_KEY`."""
        g = self.physical[self.first[skills] + rows]
        out: list[dict[str, Any]] = [{SKILL_KEY: skill} for skill in skills.tolist()]
        for name in self.token_columns:
            segments, (which, starts, ends) = self.segments[name], self.where[name]
            keep = None if self.carried[name][skills].all() else np.flatnonzero(self.carried[name][skills])
            mine = g if keep is None else g[keep]
            targets = out if keep is None else [out[i] for i in keep.tolist()]
            if len(segments) == 1:
                values = segments[0]
                for row, a, b in zip(targets, starts[mine].tolist(), ends[mine].tolist(), strict=True):
                    row[name] = values[a:b]
            else:
                for row, k, a, b in zip(
                    targets, which[mine].tolist(), starts[mine].tolist(), ends[mine].tolist(), strict=True
                ):
                    row[name] = segments[k][a:b]
        for s in np.unique(skills).tolist() if self.has_others else ():
            if not self.others[s]:
                continue
            mine = np.flatnonzero(skills == s)
            table = self.tables[s].select(self.others[s]).take(g[mine] - self.table_start[s])
            for name, values in table.to_pydict().items():
                for i, value in zip(mine.tolist(), values, strict=True):
                    out[i][name] = value
        return out


class MixtureStream(torch.utils.data.IterableDataset):
    """The training dataset handed to the DataLoader: one round of the mixture per "epoch".

    `set_epoch(r)` (called by Trainer and Accelerate before each epoch) selects round r, and `__len__` is one
    round's number of samples over all processes, so the Trainer's epochs are exactly Skill-It rounds.
    `probabilities_for_round(r)` is called when round r starts, after the previous round's update.

    DataLoader workers: worker w of W reads global batches w, w + W, ... of `batch_size` rows (all processes'
    rows of a micro-batch), so the DataLoader, which takes batches from its workers in turn, yields the round in
    order. `set_epoch` (and the constructor, for round 0) publishes the round (its index, p and the skills'
    positions) in shared memory, where the workers read it when they start the round, so the workers can be persistent (the trainer makes them so): each
    keeps its streaming readers, row store and permutations from round to round, and reads each streaming skill
    once, forward (`_StreamingSkillReader`), instead of reopening it every round.

    Rows come out as dicts with the skill index under `SKILL_KEY`; a map-style skill's token columns are numpy
    views (see `_RowStore`), the rest Python values; a streaming skill's rows are as its dataset yields them.
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
        self._store: _RowStore | None = None  # built on first read (in the DataLoader worker, if any)
        self._direct = np.asarray([not _stored(ds) for ds in self.train_sets], dtype=bool)  # read row by row
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}  # each skill's current epoch order
        # The round as the workers see it (see the class doc): the round index, then each skill's (epoch, offset);
        # and p. Shared memory survives both fork and spawn.
        self._shared_round = torch.zeros(1 + 2 * len(self.train_sets), dtype=torch.int64).share_memory_()
        self._shared_p = torch.zeros(len(self.train_sets), dtype=torch.float64).share_memory_()
        self._publish()

    def __len__(self) -> int:
        return self.samples_per_round

    def set_epoch(self, epoch: int) -> None:
        self.round_index = int(epoch)
        self._publish()

    def _publish(self) -> None:
        """Write the current round into the memory the workers share (main process)."""
        p = np.asarray(self.probabilities_for_round(self.round_index), dtype=np.float64)
        positions = [value for position in self.state.positions for value in (position.epoch, position.offset)]
        self._shared_p.copy_(torch.from_numpy(p))
        self._shared_round.copy_(torch.tensor([self.round_index, *positions], dtype=torch.int64))

    def _round(self) -> tuple:
        """This round's arguments of `round_draws`, as published by the main process."""
        values = self._shared_round.tolist()
        state = StreamState([SkillPosition(e, o) for e, o in zip(values[1::2], values[2::2], strict=True)])
        return self.sizes, self._shared_p.numpy(), state, self.seed, values[0], self.samples_per_round

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        num_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        if worker is None:  # the main process: the round as it stands now
            self._publish()
        skills, rows = round_draws(*self._round(), self._permutations)
        # Worker w owns batches w, w + W, ...: the DataLoader reads workers round-robin, so order is kept.
        if num_workers > 1:
            owned = (np.arange(len(skills)) // self.batch_size) % num_workers == worker_id
            skills, rows = skills[owned], rows[owned]
        chunk = self.batch_size * max(1, _FETCH_ROWS // self.batch_size)
        for start in range(0, len(skills), chunk):
            yield from self._fetch(skills[start : start + chunk], rows[start : start + chunk])

    def _fetch(self, skills: np.ndarray, rows: np.ndarray) -> list[dict]:
        if self._store is None:
            self._store = _RowStore(self.train_sets)
        direct = self._direct[skills]
        if not direct.any():
            return self._store.rows(skills, rows)
        fetched: list[dict] = [{}] * len(skills)
        stored = np.flatnonzero(~direct)
        for i, row in zip(stored.tolist(), self._store.rows(skills[stored], rows[stored]), strict=True):
            fetched[i] = row
        for skill in np.unique(skills[direct]).tolist():
            mine = np.flatnonzero(skills == skill)
            if self.sizes[skill] is None:
                reader = self._readers.setdefault(
                    skill, _StreamingSkillReader(self.train_sets[skill], self.skill_names[skill])
                )
                values = [reader.read(row) for row in rows[mine].tolist()]
            else:  # a format or transform: rows through `Dataset.__getitem__`, which applies it
                columns = self.train_sets[skill][rows[mine].tolist()]
                values = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
            for i, row in zip(mine.tolist(), values, strict=True):
                fetched[i] = {**row, SKILL_KEY: skill}
        return fetched
