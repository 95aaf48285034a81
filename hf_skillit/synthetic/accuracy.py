"""Per-skill exact-match accuracy of greedy answers, as the paper reports for LEGO (Table 5), and its curve along
training (the paper's figures plot validation loss against steps)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback

from ..collator import LMCollator
from ..scoring import score_rows
from .tokenizer import encode


def answer_accuracy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    batch_size: int = 256,
    skill_column: str = "skill",
) -> dict[str, float]:
    """Share of samples per skill whose greedy continuation of the prompt is exactly the answer.

    ``dataset`` holds ``prompt``/``answer``/``text`` columns (it is encoded answer-only here) or is already
    encoded answer-only (``labels`` -100 except on the answer). Greedy decoding matches every answer token iff the
    argmax under teacher forcing does at every answer position (the contexts agree up to the first miss), so one
    forward pass per batch suffices.
    """
    if "labels" not in dataset.column_names:
        dataset = encode(dataset, tokenizer, answer_only=True)
    # Right padding never reaches the scored positions of a causal LM, so any pad id serves rows of unequal length.
    collator = LMCollator(pad_token_id=getattr(tokenizer, "pad_token_id", None) or 0)
    correct = score_rows(model, dataset, collator, batch_size, accuracy=True).correct
    hits, totals = defaultdict(int), defaultdict(int)
    for skill, ok in zip(dataset[skill_column], correct.tolist(), strict=True):
        hits[skill] += ok
        totals[skill] += 1
    return {skill: hits[skill] / totals[skill] for skill in totals}


class CurveRecorder(TrainerCallback):
    """Per-skill validation loss and greedy answer accuracy ([`answer_accuracy`] on `validation`) before training,
    every `every` steps and at the last step, in `points` (`{"step", "loss", "accuracy"}` each).

    Set `trainer` (a `SkillItTrainer`, whose `evaluate_skills` gives the losses) once the trainer is built with this
    callback; `record(step)` also takes a point by hand.
    """

    def __init__(self, every: int, validation: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int = 256):
        self.every, self.validation, self.tokenizer, self.batch_size = every, validation, tokenizer, batch_size
        self.trainer: Any = None
        self.points: list[dict[str, Any]] = []

    def record(self, step: int) -> None:
        trainer = self.trainer
        loss = trainer.evaluate_skills(list(trainer.skills.eval_skills))
        accuracy = answer_accuracy(trainer.model, self.tokenizer, self.validation, batch_size=self.batch_size)
        self.points.append({"step": step, "loss": loss, "accuracy": accuracy})

    def on_train_begin(self, args, state, control, **kwargs):
        self.record(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.record(state.global_step)
