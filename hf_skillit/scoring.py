"""Scoring rows with a causal LM: the one loop behind every loss or accuracy this package measures.

Rows -> collated batch -> eval mode, no gradients -> the model's device -> forward under the caller's autocast ->
next-token cross-entropy at the positions whose label is not -100 (`IGNORE_INDEX`). The per-skill validation losses
(`hf_skillit.evaluation.per_skill_loss`), the curricula's per-row difficulty (`curriculum.sample_losses`), skill
discovery's per-sample loss trajectories (`discovery.per_sample_loss`, Skill-It §2.3) and the synthetic tasks' answer
accuracy (`synthetic.accuracy.answer_accuracy`) all score through [`score_batch`] / [`score_rows`], so the device,
autocast and the scored-logits shortcut below are handled here, once.

The scored-logits shortcut ([`keep_scored_logits`]). A causal LM's loss reads the logits at the positions whose
next token is scored (`labels[:, 1:] != -100`); with answer-only labels that is one position of each row (LEGO: 1
of 35), yet the LM head and the cross-entropy run over the whole vocabulary at every position (SmolLM2: 49,152
words; 1.4x the CPU time of the scored positions alone, measured). transformers' causal LMs take `logits_to_keep`
(an int keeps the last n positions, a 1-d index tensor those positions) and `shift_labels` (labels already aligned
with the logits): given the positions any row scores, they return the same loss over the same positions. A model
whose `forward` merely has a `logits_to_keep` parameter may still ignore it, slice `[:, -n:]` with it, or shift the
labels itself (remote code): the shortcut is therefore used only once it is proven on the model, by comparing the
first eligible batch's logits and loss both ways (eval mode, no gradients, the caller's autocast); a model that
differs, or raises, is scored the plain way from then on. The verdict is kept per model object, so the proof runs
once per model.

Under DDP (which broadcasts buffers in every forward), FSDP (which all-gathers the weights) or DeepSpeed, a forward
is a collective: every process must run the proof's two forwards at the same call. Whether a batch is eligible
(scored positions at most half the row) depends on the process's own rows, so for such a wrapped model the
processes decide together, with an all-reduce of one flag per call until the verdict is known: the proof runs on
the first call whose batch is eligible on every process, and the model counts as proven only if it is proven on
every process. A model whose forward is local (unwrapped, as evaluation under DDP and the callbacks pass it)
decides alone: no collective, so a process may score on its own.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

from .collator import IGNORE_INDEX

__all__ = ["BatchScores", "RowScores", "eval_mode", "keep_scored_logits", "score_batch", "score_rows"]

MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")
Collator = Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
Autocast = Callable[[], contextlib.AbstractContextManager]

# ----- the scored-logits shortcut -----------------------------------------------------------------------------------

# base model -> whether the shortcut is proven equal on it (absent: not tried yet). Weak keys: a verdict dies with
# its model, and a new model object (another run, another adapter) is proven anew.
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _base_model(model: nn.Module) -> nn.Module:
    while hasattr(model, "module"):  # DDP / FSDP1 / DeepSpeed wrappers
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def _kept_inputs(inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """`inputs` asking for the logits at the positions any row scores, or None where that saves little."""
    labels = inputs.get("labels")
    if labels is None or "shift_labels" in inputs or labels.dim() != 2:
        return None
    shifted = labels[:, 1:]
    keep = (shifted != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0 or 2 * keep.numel() > shifted.shape[1]:
        return None
    kept = shifted[:, keep]
    return {**inputs, "labels": kept, "shift_labels": kept, "logits_to_keep": keep}


# Tolerances of the proof. The kept logits come from the same hidden states through the LM head run on fewer rows,
# whose kernel may round differently: up to ~2 units in the last place of bfloat16 (2^-6 relative) under mixed
# precision, which this module cannot see (accelerate's autocast wraps `forward`). Wrong positions differ by the
# spread of the logits across positions, far more. The model's own loss is compared with the loss of its own kept
# logits, both float32 reductions of one tensor, so that tolerance is tight: a model shifting the labels itself is
# off by a whole token's loss difference.
_LOGITS_RTOL, _LOSS_RTOL = 2.0**-6, 1e-4


@torch.no_grad()
def _prove(model: nn.Module, inputs: Mapping[str, Any], kept: Mapping[str, Any]) -> bool:
    """Whether the shortcut gives this model's plain logits at the kept positions, and a loss over exactly them."""
    was_training = model.training
    model.eval()
    try:
        plain = model(**inputs)
        short = model(**kept)
    except (TypeError, ValueError, RuntimeError, IndexError):  # a forward that cannot take the shortcut's inputs
        return False
    finally:
        model.train(was_training)
    expected = plain.logits[:, :-1][:, kept["logits_to_keep"]].float()
    logits = short.logits.float()
    if logits.shape != expected.shape or not torch.isfinite(logits).all():
        return False
    if not torch.allclose(logits, expected, rtol=_LOGITS_RTOL, atol=_LOGITS_RTOL * float(expected.abs().max())):
        return False
    loss = getattr(short, "loss", None)
    if loss is None:  # scored from the logits only (evaluation); training needs a model that returns its loss
        return True
    labels = kept["shift_labels"].reshape(-1)
    own = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels, ignore_index=IGNORE_INDEX)
    return bool(torch.isclose(loss.float(), own, rtol=_LOSS_RTOL, atol=1e-6))


def _forward_is_collective(model: nn.Module) -> bool:
    """Whether a forward of `model` runs collectives across processes: a DDP, FSDP1 or DeepSpeed wrapper, or a
    module sharded by FSDP2 (`fully_shard`)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if torch.distributed.get_world_size() < 2:
        return False
    if hasattr(model, "module"):  # DDP / FSDP1 / DeepSpeed wrappers
        return True
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def _on_every_process(flag: bool) -> bool:
    """`flag` and-ed over the processes (one all-reduce of one number)."""
    on_gpu = torch.distributed.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


def keep_scored_logits(model: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` asking the model for logits at the scored positions only, where that saves work and is proven equal.

    Returns `inputs` itself when the positions are most of the row, when the model's `forward` takes no
    `logits_to_keep`, or when the shortcut differed from the plain forward on this model (see the module doc);
    else a copy with `labels` and `shift_labels` at the kept positions and `logits_to_keep` their index tensor.
    The first eligible call on a model runs two extra forward passes (eval mode, no gradients) to prove it; call it
    under the autocast the real forward runs under. For a model whose forward is a collective (DDP, FSDP,
    DeepSpeed), call it on every process at the same calls, as the training and evaluation loops do: until the
    verdict is known, the processes decide together whether this call proves.
    """
    kept = _kept_inputs(inputs)
    base = _base_model(model)
    verdict = _VERDICTS.get(base)
    if verdict is None:
        together = _forward_is_collective(model)
        if together and not _on_every_process(kept is not None):
            return inputs  # not eligible everywhere: no process proves at this call
        if kept is None:
            return inputs
        takes = "logits_to_keep" in inspect.signature(base.forward).parameters
        verdict = takes and _prove(model, inputs, kept)
        if together:
            verdict = _on_every_process(verdict)
        _VERDICTS[base] = verdict
    if kept is None:
        return inputs
    return kept if verdict else inputs


# ----- scoring ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode without gradients; its train/eval mode restored afterwards."""
    was_training = model.training
    try:
        with torch.no_grad():
            yield model.eval()
    finally:
        model.train(was_training)


@dataclass
class BatchScores:
    """One batch scored: next-token cross-entropy at the scored positions (float32 on the model's device).

    `loss_sum` and `count` are the batch's totals (`loss_sum` summed by `cross_entropy(reduction="sum")`);
    `token_loss` ([rows, positions], 0 where unscored) and `scored` are per token, `correct` (every scored token's
    argmax is its label, i.e. a greedy answer that is exactly right) per row, when asked for.
    """

    loss_sum: torch.Tensor
    count: torch.Tensor
    scored: torch.Tensor
    token_loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None

    @property
    def row_loss_sum(self) -> torch.Tensor:
        return self.token_loss.sum(-1)

    @property
    def row_count(self) -> torch.Tensor:
        return self.scored.sum(-1)


def score_batch(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    device: torch.device | str | None = None,
    autocast: Autocast = contextlib.nullcontext,
    per_token: bool = False,
    accuracy: bool = False,
) -> BatchScores:
    """Score a collated batch (`input_ids`, `attention_mask`, `labels`) with `model`, which the caller has put in
    eval mode (`eval_mode`). `device` defaults to the model's parameters' device; `autocast` is the context the
    forward runs under (a Trainer's `autocast_smart_context_manager`)."""
    device = device if device is not None else next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in MODEL_COLUMNS if k in batch}
    with autocast():
        kept = keep_scored_logits(model, inputs)
        forward = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        if kept is inputs:
            logits = model(**forward).logits[:, :-1]
            labels = inputs["labels"][:, 1:]
        else:  # logits at the scored positions only, their labels already shifted
            logits = model(**forward, logits_to_keep=kept["logits_to_keep"]).logits
            labels = kept["shift_labels"]
    flat_logits, flat_labels = logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1)
    scored = labels != IGNORE_INDEX
    loss_sum = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    scores = BatchScores(loss_sum=loss_sum, count=scored.sum(), scored=scored)
    if per_token:
        token_loss = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="none")
        scores.token_loss = token_loss.view(labels.shape)
    if accuracy:
        scores.correct = ((logits.argmax(-1) == labels) | ~scored).all(-1)
    return scores


@dataclass
class RowScores:
    """Each row's summed scored-token loss, its number of scored tokens, and (when asked) whether it is exactly right."""

    loss_sum: np.ndarray
    count: np.ndarray
    correct: np.ndarray | None = None

    @property
    def mean_loss(self) -> np.ndarray:
        """Each row's mean loss over its scored tokens; NaN for a row with none."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.loss_sum / np.maximum(self.count, 1), np.nan)


def batches(
    dataset: datasets.Dataset, collator: Collator, batch_size: int, columns: Sequence[str] = MODEL_COLUMNS
) -> Iterator[dict[str, torch.Tensor]]:
    """Collated batches of `dataset`'s `columns` (those it has), in row order."""
    data = dataset.select_columns([c for c in columns if c in dataset.column_names])
    for start in range(0, len(data), batch_size):
        values = data[start : start + batch_size]
        yield collator([dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)])


def score_rows(
    model: nn.Module,
    dataset: datasets.Dataset,
    collator: Collator,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    autocast: Autocast = contextlib.nullcontext,
    accuracy: bool = False,
) -> RowScores:
    """Score every row of a tokenized `dataset` in batches of `batch_size` (see [`score_batch`]), in row order."""
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"scoring needs tokenized rows (`input_ids`); columns: {dataset.column_names}")
    sums, counts, correct = [], [], []
    with eval_mode(model):
        for batch in batches(dataset, collator, batch_size):
            scores = score_batch(model, batch, device, autocast, per_token=True, accuracy=accuracy)
            sums.append(scores.row_loss_sum.double().cpu())
            counts.append(scores.row_count.cpu())
            if accuracy:
                correct.append(scores.correct.cpu())
    if not sums:
        return RowScores(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool) if accuracy else None)
    return RowScores(
        torch.cat(sums).numpy(), torch.cat(counts).numpy(), torch.cat(correct).numpy() if accuracy else None
    )
