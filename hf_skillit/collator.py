"""Batching for causal LM skills: padding that keeps answer-only label masks intact."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .streams import SKILL_KEY

IGNORE_INDEX = -100
"""Label value of positions that are not scored (the convention of transformers' loss functions)."""


@dataclass
class LMCollator:
    """Right-pads `input_ids`, `attention_mask` and `labels` for a causal LM.

    Rows may carry their own `labels` with `-100` on positions that are not scored (an answer-only mask);
    rows without labels are scored on every non-padding token.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        for i, feature in enumerate(features):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            n = len(ids)
            input_ids[i, :n] = ids
            mask = feature.get("attention_mask")
            attention_mask[i, :n] = torch.as_tensor(mask, dtype=torch.long) if mask is not None else 1
            row_labels = feature.get("labels")
            if row_labels is None:
                labels[i, :n] = torch.where(attention_mask[i, :n].bool(), ids, IGNORE_INDEX)
            else:
                labels[i, :n] = torch.as_tensor(row_labels, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass
class SkillTaggingCollator:
    """Wraps a collator so each batch also carries its rows' skill indices under `SKILL_KEY`.

    The indices travel with the batch through Accelerate's dispatching and slicing, so the trainer counts
    the samples each process actually trains on, not the ones the DataLoader has read ahead.
    """

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        skills = [f.pop(SKILL_KEY) for f in features]
        batch = self.collator(features)
        batch[SKILL_KEY] = torch.tensor(skills, dtype=torch.long)
        return batch
