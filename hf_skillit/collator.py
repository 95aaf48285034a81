"""Batching for causal LM skills: padding that keeps answer-only label masks intact."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
        ids = [f["input_ids"] for f in features]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        length = int(lengths.max())
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        # The rows' tokens land in row-major order on the positions `valid` marks: one vectorised scatter per
        # column instead of a Python loop over rows (rows may be lists, numpy arrays or tensors).
        valid = np.arange(length) < lengths[:, None]
        input_ids = np.full((len(ids), length), self.pad_token_id, dtype=np.int64)
        input_ids[valid] = _concatenate(ids)
        attention_mask = valid.astype(np.int64)
        masks = _column(features, "attention_mask", lengths)
        if masks is not None:
            attention_mask[valid] = masks
        labels = np.full((len(ids), length), IGNORE_INDEX, dtype=np.int64)
        row_labels = _column(features, "labels", lengths)
        if row_labels is None:  # rows without labels are scored on every non-padding token
            labels[valid] = np.where(attention_mask[valid] != 0, input_ids[valid], IGNORE_INDEX)
        else:
            labels[valid] = row_labels
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
        }


def _concatenate(rows: Sequence[Any]) -> np.ndarray:
    return np.concatenate(rows, axis=None)


def _column(features: Sequence[dict[str, Any]], key: str, lengths: np.ndarray) -> np.ndarray | None:
    """Every row's `key` concatenated (None when no row has it); a row without it gets the default for its
    positions: 1 for the attention mask, its own tokens (where attended) for the labels."""
    values = [f.get(key) for f in features]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        for i, feature in enumerate(features):
            if not present[i]:
                ids = np.asarray(feature["input_ids"], dtype=np.int64)
                mask = feature.get("attention_mask")
                default = np.ones_like(ids) if key == "attention_mask" else ids
                if key == "labels" and mask is not None:
                    default = np.where(np.asarray(mask) != 0, ids, IGNORE_INDEX)
                values[i] = default
    own = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    if (bad := np.flatnonzero(own != lengths)).size:
        raise ValueError(f"row {bad[0]} of the batch has {own[bad[0]]} {key} for {lengths[bad[0]]} input_ids")
    return _concatenate(values)


TOKENS_KEY = "skillit_tokens"
"""Key carrying each training row's number of trained tokens (labels other than -100) to `training_step`."""


def _trained_tokens(features: Sequence[dict[str, Any]], batch: dict[str, Any]) -> torch.Tensor:
    """Per row, the positions of the batch whose label is not -100: one batch row per feature (padded batches), or
    one long row holding the features one after the other (TRL's padding-free batches), split at their lengths."""
    labels = batch.get("labels")
    scored = labels != IGNORE_INDEX if isinstance(labels, torch.Tensor) and labels.dim() == 2 else None
    if scored is not None and scored.shape[0] == len(features):
        return scored.sum(dim=1)
    lengths = [len(f["input_ids"]) for f in features]
    if scored is not None and scored.shape[0] == 1 and sum(lengths) <= scored.shape[1]:
        return torch.stack([part.sum() for part in torch.split(scored[0, : sum(lengths)], lengths)])
    raise ValueError(
        f"cannot count the trained tokens of a batch whose labels have shape {getattr(labels, 'shape', None)}"
    )


@dataclass
class SkillTaggingCollator:
    """Wraps a collator so each batch also carries its rows' skill indices under `SKILL_KEY` and their trained
    tokens under `TOKENS_KEY`.

    Both travel with the batch through Accelerate's dispatching and slicing, so the trainer counts the samples and
    tokens each process actually trains on, not the ones the DataLoader has read ahead.
    """

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        skills = [f.pop(SKILL_KEY) for f in features]
        batch = self.collator(features)
        batch[SKILL_KEY] = torch.tensor(skills, dtype=torch.long)
        batch[TOKENS_KEY] = _trained_tokens(features, batch)
        return batch
