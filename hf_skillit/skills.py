"""Ordered skill sets: per-skill training data and per-skill validation data."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, IterableDataset

from .names import check_skill_name as _check_name
from .names import compare_skills
from .names import duplicate_names as _duplicates
from .packing import prepare_split

__all__ = ["SkillSet"]

_REPR_MAX_SKILLS = 8


def _hold_out_indices(n_rows: int, n_holdout: int, seed: int) -> tuple[list[int], list[int]]:
    # One generator per skill, seeded identically, so a skill's split does not depend on the other skills.
    held = np.random.default_rng(seed).permutation(n_rows)[:n_holdout]
    mask = np.zeros(n_rows, dtype=bool)
    mask[held] = True
    # Sorted indices keep the original row order on both sides of the split.
    return np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()


def _check_holdout(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"an integer validation size must be >= 1 rows per skill, got {n!r}")
    return int(n)


def _group_rows(ds: Dataset, column: str, what: str) -> dict[str, list[int]]:
    """Row indices of `ds` per value of `column`, keyed by `str(value)` in order of first appearance."""
    if column not in ds.column_names:
        raise ValueError(f"{what} dataset has no column {column!r}; available columns: {ds.column_names}")
    groups: dict[object, list[int]] = {}
    for row, value in enumerate(ds[column][:]):
        groups.setdefault(value, []).append(row)
    if None in groups:
        raise ValueError(f"{what} dataset row {groups[None][0]} has no value in column {column!r}")
    return {str(value): rows for value, rows in groups.items()}


class SkillSet:
    """An ordered training skill set with its data, plus the validation data of the evaluation skills.

    Args:
        train: skill name -> training data. The mapping's insertion order is the order of the training skills
            (rows of the skills graph, entries of a mixture).
        validation: evaluation skill name -> validation data. Usually the training skills; may omit some of them
            and may add evaluation-only skills (out-of-domain setting). May be empty when the evaluation skills
            are measured elsewhere (e.g. by lm-evaluation-harness tasks).
    """

    def __init__(
        self,
        train: Mapping[str, Dataset | IterableDataset],
        validation: Mapping[str, Dataset],
    ) -> None:
        if not isinstance(train, Mapping) or not train:
            raise ValueError("train must be a non-empty mapping of skill name -> dataset")
        if not isinstance(validation, Mapping):
            raise ValueError(f"validation must be a mapping of skill name -> Dataset, got {type(validation).__name__}")
        for name, data in train.items():
            _check_name(name, "training")
            if not isinstance(data, (Dataset, IterableDataset)):
                raise ValueError(
                    f"training data of skill {name!r} must be a datasets.Dataset or IterableDataset, "
                    f"got {type(data).__name__}"
                )
            if isinstance(data, Dataset) and len(data) == 0:
                raise ValueError(f"skill {name!r} has no training rows")
        for name, data in validation.items():
            _check_name(name, "validation")
            if not isinstance(data, Dataset):
                raise ValueError(
                    f"validation data of skill {name!r} must be a datasets.Dataset, got {type(data).__name__}"
                )
            if len(data) == 0:
                raise ValueError(f"skill {name!r} has no validation rows")
        self._train = dict(train)
        self._validation = dict(validation)
        # skill -> split -> `hf_skillit.packing.SplitCounts` of the splits `tokenized` prepared (map-style only).
        self.token_counts: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_dict(
        cls,
        train: Mapping[str, Dataset | IterableDataset],
        validation: Mapping[str, Dataset] | int,
        *,
        seed: int = 0,
    ) -> SkillSet:
        """Like the constructor, but `validation` may be an int n: hold out n rows of each training skill.

        A map-style skill holds out n random rows. A streaming skill (`IterableDataset`) holds out its first n rows,
        read once into a `Dataset`; its training stream starts after them (`skip(n)`), so training never reads them.
        """
        if isinstance(validation, Mapping):
            return cls(train, validation)
        n = _check_holdout(validation)
        train_parts, validation_parts = {}, {}
        for name, data in train.items():
            if isinstance(data, IterableDataset):
                # A stream has no random access: the held-out rows are its prefix, which training skips.
                prefix = list(data.take(n + 1))
                if len(prefix) <= n:
                    raise ValueError(
                        f"streaming skill {name!r} has {len(prefix)} rows: holding out {n} for validation leaves none "
                        "to train on"
                    )
                validation_parts[name] = Dataset.from_list(prefix[:n], features=data.features)
                train_parts[name] = data.skip(n)
            elif isinstance(data, Dataset):
                if len(data) <= n:
                    raise ValueError(
                        f"skill {name!r} has {len(data)} rows: holding out {n} for validation leaves none to train on"
                    )
                train_rows, validation_rows = _hold_out_indices(len(data), n, seed)
                train_parts[name], validation_parts[name] = data.select(train_rows), data.select(validation_rows)
            else:
                train_parts[name] = data  # the constructor reports the wrong type
        return cls(train_parts, validation_parts)

    @classmethod
    def from_column(
        cls,
        ds: Dataset,
        column: str = "skill",
        validation: Dataset | int | None = None,
        order: Sequence[str] | None = None,
        seed: int = 0,
    ) -> SkillSet:
        """Split one Dataset into skills by the values of `column` (names are `str(value)`).

        Args:
            ds: the training data.
            column: the column holding each row's skill.
            validation: a Dataset with the same column (it may hold evaluation-only skills and lack some training
                skills), an int n of rows held out per training skill, or None for no validation data.
            order: the order of the training skills; must list exactly the skills present in `ds`. Defaults to
                their order of first appearance in `ds`.
            seed: seed of the held-out rows when `validation` is an int.
        """
        groups = _group_rows(ds, column, "training")
        if order is not None:
            order = list(order)
            if dupes := _duplicates(order):
                raise ValueError(f"order lists skills more than once: {dupes}")
            missing, unknown = compare_skills(order, groups)
            if unknown or missing:
                raise ValueError(
                    f"order must list exactly the skills in column {column!r}: "
                    f"not in the data: {unknown}; missing from order: {missing}"
                )
            groups = {name: groups[name] for name in order}

        if validation is None:
            return cls({name: ds.select(rows) for name, rows in groups.items()}, {})
        if isinstance(validation, Dataset):
            validation_groups = _group_rows(validation, column, "validation")
            # Training skills first (in training order), then evaluation-only skills in order of appearance.
            names = [name for name in groups if name in validation_groups]
            names += [name for name in validation_groups if name not in groups]
            return cls(
                {name: ds.select(rows) for name, rows in groups.items()},
                {name: validation.select(validation_groups[name]) for name in names},
            )

        n = _check_holdout(validation)
        train_parts, validation_parts = {}, {}
        for name, rows in groups.items():
            if len(rows) <= n:
                raise ValueError(
                    f"skill {name!r} has {len(rows)} rows: holding out {n} for validation leaves none to train on"
                )
            train_rows, validation_rows = _hold_out_indices(len(rows), n, seed)
            train_parts[name] = ds.select([rows[i] for i in train_rows])
            validation_parts[name] = ds.select([rows[i] for i in validation_rows])
        return cls(train_parts, validation_parts)

    @property
    def train_skills(self) -> tuple[str, ...]:
        return tuple(self._train)

    @property
    def eval_skills(self) -> tuple[str, ...]:
        """The skills with validation data, in the validation mapping's order."""
        return tuple(self._validation)

    def train(self, name: str) -> Dataset | IterableDataset:
        if name not in self._train:
            raise ValueError(f"unknown training skill {name!r}; training skills: {list(self._train)}")
        return self._train[name]

    def validation(self, name: str) -> Dataset:
        if name not in self._validation:
            raise ValueError(
                f"no validation data for skill {name!r}; skills with validation data: {list(self._validation)}"
            )
        return self._validation[name]

    def train_sizes(self) -> dict[str, int | None]:
        """Rows per training skill; None for an IterableDataset, whose length is unknown."""
        return {name: len(data) if isinstance(data, Dataset) else None for name, data in self._train.items()}

    def subset(self, names: Sequence[str]) -> SkillSet:
        """The given training skills, in the given order, with their validation data."""
        names = list(names)
        if dupes := _duplicates(names):
            raise ValueError(f"subset lists skills more than once: {dupes}")
        if unknown := [name for name in names if name not in self._train]:
            raise ValueError(f"unknown training skills {unknown}; training skills: {list(self._train)}")
        subset = SkillSet(
            {name: self._train[name] for name in names},
            {name: self._validation[name] for name in names if name in self._validation},
        )
        subset.token_counts = {name: self.token_counts[name] for name in names if name in self.token_counts}
        return subset

    def splits(self) -> dict[tuple[str, str], Dataset | IterableDataset]:
        """Every split's data by (skill, `"train"` or `"validation"`)."""
        return {
            **{(name, "train"): data for name, data in self._train.items()},
            **{(name, "validation"): data for name, data in self._validation.items()},
        }

    def map(self, function: Callable[[Dataset | IterableDataset, str, str], Dataset | IterableDataset]) -> SkillSet:
        """The same skills with `function(dataset, skill, split)` applied to every split (`split` is `"train"` or
        `"validation"`): the one loop over (skill, split) that tokenizers and data preparations share."""
        return SkillSet(
            {name: function(self.train(name), name, "train") for name in self.train_skills},
            {name: function(self.validation(name), name, "validation") for name in self.eval_skills},
        )

    def tokenized(
        self,
        tokenizer: Callable[..., Mapping[str, list]] | None = None,
        text_field: str = "text",
        max_length: int | None = None,
        *,
        packing: bool = False,
        long_documents: str = "truncate",
        num_proc: int | None = None,
    ) -> SkillSet:
        """The same skills with every split made into training rows by `hf_skillit.packing.prepare_split`: a split
        with `input_ids` is kept as it is (packed if `packing`); one with a `text_field` column is tokenized with
        `tokenizer`, then truncated to `max_length`, chunked into rows of at most `max_length` tokens
        (`long_documents="chunk"`) or packed into blocks of `max_length` tokens per skill (`packing=True`).
        The result's `token_counts` holds each map-style split's `SplitCounts`.

        Raises:
            ValueError: naming the skill and split that has neither column, or holds text without a tokenizer.
        """
        counts: dict[str, dict[str, Any]] = {}

        def prepare(dataset: Dataset | IterableDataset, skill: str, split: str) -> Dataset | IterableDataset:
            prepared, split_counts = prepare_split(
                dataset,
                skill,
                split,
                tokenizer=tokenizer,
                text_field=text_field,
                max_length=max_length,
                packing=packing,
                long_documents=long_documents,
                num_proc=num_proc,
            )
            if split_counts is not None:
                counts.setdefault(skill, {})[split] = split_counts
            return prepared

        prepared = self.map(prepare)
        prepared.token_counts = counts
        return prepared

    def __len__(self) -> int:
        return len(self._train)

    def __iter__(self) -> Iterator[str]:
        return iter(self._train)

    def __contains__(self, name: object) -> bool:
        return name in self._train

    def __repr__(self) -> str:
        def sizes(mapping: Mapping[str, int | None]) -> str:
            items = [f"{name!r}: {size}" for name, size in list(mapping.items())[:_REPR_MAX_SKILLS]]
            if len(mapping) > _REPR_MAX_SKILLS:
                items.append(f"... ({len(mapping) - _REPR_MAX_SKILLS} more)")
            return "{" + ", ".join(items) + "}"

        validation_sizes = {name: len(data) for name, data in self._validation.items()}
        return f"SkillSet(train={sizes(self.train_sizes())}, validation={sizes(validation_sizes)})"
