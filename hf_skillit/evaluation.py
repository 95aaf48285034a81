"""Per-skill validation loss, token-weighted and identical on every process."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import datasets
import torch
from torch import nn

from .collator import IGNORE_INDEX


@runtime_checkable
class SkillEvaluator(Protocol):
    """Evaluation skills measured by something other than a validation set (e.g. lm-eval tasks).

    Called on every process at each round boundary with the trainer; must return the same
    `{skill: value}` (lower is better) on every process, and leave the model's train/eval mode as it was.
    """

    skills: tuple[str, ...]

    def __call__(self, trainer: Any) -> dict[str, float]: ...


def scored_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over the scored positions (labels != -100), and their number."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    loss = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss.double(), (shift_labels != IGNORE_INDEX).sum().double()


def _kept_token_loss(logits: torch.Tensor, shift_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`scored_token_loss` for logits kept at the scored positions (`keep_scored_logits`)."""
    loss = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss.double(), (shift_labels != IGNORE_INDEX).sum().double()


def keep_scored_logits(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` asking the model for logits at the scored positions only, where that saves work.

    A causal LM's loss reads the logits at positions whose next token is scored (`labels[:, 1:] != -100`); with
    answer-only labels that is one position of each row (LEGO: 1 of 35), yet the LM head and the cross-entropy run
    over the whole vocabulary at every position (SmolLM2: 49,152 words; 1.4x the CPU time of the scored positions
    alone, measured). Models whose forward takes `logits_to_keep` (transformers' causal LMs, also under peft) get
    the positions any row scores, and the labels at those positions as `shift_labels`: the same loss over the same
    positions, up to float rounding. Unchanged when the positions are most of the row or the model cannot.
    """
    labels = inputs.get("labels")
    if labels is None or "shift_labels" in inputs or labels.dim() != 2 or not _takes_logits_to_keep(model):
        return inputs
    shifted = labels[:, 1:]
    keep = (shifted != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if 2 * keep.numel() > shifted.shape[1]:
        return inputs
    kept = shifted[:, keep]
    return {**inputs, "labels": kept, "shift_labels": kept, "logits_to_keep": keep}


def _takes_logits_to_keep(model: Any) -> bool:
    while hasattr(model, "module"):  # DDP / FSDP wrappers
        model = model.module
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return "logits_to_keep" in inspect.signature(base.forward).parameters


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
    totals = torch.zeros(2, len(names), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for j, name in enumerate(names):
            dataset = validation[name]
            size = len(dataset) if max_samples is None else min(len(dataset), max_samples)
            columns = [c for c in ("input_ids", "attention_mask", "labels") if c in dataset.column_names]
            mine = list(range(process_index, size, num_processes))
            num_batches = math.ceil(math.ceil(size / num_processes) / batch_size)
            for b in range(num_batches):
                indices = mine[b * batch_size : (b + 1) * batch_size]
                weight = 1.0 if indices else 0.0
                batch = collator(_rows(dataset, indices or [0], columns))
                inputs = keep_scored_logits(model, {k: v.to(device) for k, v in batch.items()})
                keep = {"logits_to_keep": inputs["logits_to_keep"]} if "logits_to_keep" in inputs else {}
                with autocast():
                    logits = model(
                        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **keep
                    ).logits
                if keep:  # logits at the scored positions only, their labels already shifted
                    loss_sum, count = _kept_token_loss(logits, inputs["shift_labels"])
                else:
                    loss_sum, count = scored_token_loss(logits, batch["labels"])
                totals[0, j] += weight * loss_sum
                totals[1, j] += weight * count
    finally:
        model.train(was_training)
    if reduce_sum is not None:
        totals = reduce_sum(totals)
    return {
        name: (float(totals[0, j] / totals[1, j]) if totals[1, j] > 0 else math.nan) for j, name in enumerate(names)
    }
