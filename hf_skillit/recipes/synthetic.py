"""A recipe's synthetic data as rows: generated from `data.synthetic` and `data.generator`, the training rows that
equal a validation row removed, the skills of `data.skills` kept; and the rows training draws.

Rows, not `datasets.Dataset`s: `hf_skillit.recipes.data` encodes them for training, and the dry run counts them
per skill without importing `datasets` or a tokenizer (a second or more).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from .schema import RecipeError
from .sections import DataArguments, synthetic_generator

if TYPE_CHECKING:
    from .sections import Recipe

__all__ = ["synthetic_rows"]


def synthetic_rows(data: DataArguments) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """The synthetic task's training and validation rows, unencoded, and the training skills in order: what
    [`synthetic_skills`] encodes, and what the dry run counts (without `datasets` or a tokenizer)."""
    generate = synthetic_generator(data.synthetic).rows
    kwargs = dict(data.generator or {})
    names = data.synthetic_skills
    if data.skills is not None and (unknown := [s for s in data.skills if s not in names]):
        raise RecipeError(f"data.skills: {unknown} are not skills of {data.synthetic} (skills: {names})")
    train = generate(data.num_train_samples, seed=data.seed, **kwargs)
    # Validation is balanced whatever the training proportions, from its own seed, without rows seen in training.
    validation_kwargs = {k: v for k, v in kwargs.items() if k != "proportions"}
    validation = generate(data.validation_per_skill * len(names), seed=data.seed + 1, **validation_kwargs)
    seen = {row["text"] for row in validation}
    train = [row for row in train if row["text"] not in seen]
    present = {row["skill"] for row in train}
    order = [s for s in (data.skills or names) if s in present]
    if data.skills is not None:
        keep = set(order)
        train, validation = ([row for row in rows if row["skill"] in keep] for rows in (train, validation))
    return train, validation, order


def _with_train_rows(recipe: Recipe) -> DataArguments:
    """The data section with `num_train_samples: null` resolved to the rows training draws, over all processes."""
    data, training = recipe.data, recipe.training
    if data.num_train_samples is not None:
        return data
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    rows = training.max_steps * training.per_device_train_batch_size * training.gradient_accumulation_steps
    return dataclasses.replace(data, num_train_samples=rows * processes)
