"""Per-skill validation loss, token-weighted and identical on every process."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import datasets
import torch
from torch import nn

from .collator import IGNORE_INDEX
from .scoring import MODEL_COLUMNS, eval_mode, score_batch


@runtime_checkable
class SkillEvaluator(Protocol):
    """Evaluation skills measured by something other than a validation set (e.g. lm-eval tasks).

    Called on every process at each round boundary with the trainer; must return the same
    `{skill: value}` (lower is better) on every process, and leave the model's train/eval mode as it was.
    """

    skills: tuple[str, ...]

    def __call__(self, trainer: Any) -> dict[str, float]: ...


def scored_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over the scored positions (labels != -100), and their number: the plain,
    every-position computation that `hf_skillit.scoring` must agree with (the tests' by-hand reference)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    loss = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss.double(), (shift_labels != IGNORE_INDEX).sum().double()


def _rows(dataset: datasets.Dataset, indices: Sequence[int], columns: Sequence[str]) -> list[dict[str, Any]]:
    batch = dataset.select_columns(list(columns))[list(indices)]
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


@torch.no_grad()
def per_skill_loss(
    model: nn.Module,
    validation: Mapping[str, datasets.Dataset],
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device,
    process_index: int = 0,
    num_processes: int = 1,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_samples: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Token-weighted mean loss of each skill's validation rows.

    Each process scores rows `process_index, process_index + num_processes, ...` of every skill; the
    per-skill (loss sum, token count) pairs are then summed across processes with `reduce_sum`, so every
    process returns the same numbers, equal to a single-process evaluation up to summation order. Every
    process runs the same number of forward passes (padding with zero-weight batches), which sharded
    models (FSDP) need. A skill with no scored token gets NaN, which the mixers treat as "keep p".
    """
    names = list(validation)
    # Each batch's (loss sum, token count) stays on the device until the end (no sync per batch), then is added up
    # in float64 on the CPU: Apple's MPS has no float64, and float32 sums of thousands of batches would drift.
    sums: list[list[torch.Tensor]] = [[] for _ in names]
    with eval_mode(model):
        for j, name in enumerate(names):
            dataset = validation[name]
            size = len(dataset) if max_samples is None else min(len(dataset), max_samples)
            columns = [c for c in MODEL_COLUMNS if c in dataset.column_names]
            mine = list(range(process_index, size, num_processes))
            num_batches = math.ceil(math.ceil(size / num_processes) / batch_size)
            for b in range(num_batches):
                indices = mine[b * batch_size : (b + 1) * batch_size]
                # A process out of rows scores row 0 and drops the result: every process runs the same forwards.
                scores = score_batch(model, collator(_rows(dataset, indices or [0], columns)), device, autocast)
                if indices:
                    sums[j].append(torch.stack([scores.loss_sum.float(), scores.count.float()]))
    totals = torch.zeros(2, len(names), dtype=torch.float64)
    for j, parts in enumerate(sums):
        for loss_sum, count in torch.stack(parts).cpu().double().tolist() if parts else []:
            totals[0, j] += loss_sum
            totals[1, j] += count
    if reduce_sum is not None:
        totals = reduce_sum(totals)
    return {
        name: (float(totals[0, j] / totals[1, j]) if totals[1, j] > 0 else math.nan) for j, name in enumerate(names)
    }
