"""`hf_skillit.scoring`: the one scoring loop, and the scored-logits shortcut used only where it is proven equal.

Remote-code models may have a `logits_to_keep` parameter and still ignore it, or read it as "the last n positions"
and shift the labels themselves. Before the proof, such a model crashed evaluation and training (the kept labels did
not fit its logits) or could misalign the loss silently; now it is scored and trained the plain way.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import run_two_ranks, skillit_config, tiny_config
from torch.nn import functional as F
from transformers import GPTNeoXForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_skillit import LMCollator, SkillItTrainer
from hf_skillit.curriculum import sample_losses
from hf_skillit.discovery import per_sample_loss
from hf_skillit.evaluation import per_skill_loss, scored_token_loss
from hf_skillit.scoring import keep_scored_logits, score_rows
from hf_skillit.synthetic import make_tiny_model


def _shifted_loss(logits, labels):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


class IgnoresLogitsToKeep(GPTNeoXForCausalLM):
    """Takes `logits_to_keep` but computes every position, and shifts the labels itself (ignoring `shift_labels`)."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, logits_to_keep=0, **kwargs):
        logits = super().forward(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = _shifted_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)


class SlicesLastN(GPTNeoXForCausalLM):
    """Reads `logits_to_keep` as "the last n positions" (`[:, -n:]`), as older remote code does."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, logits_to_keep=0, **kwargs):
        hidden = self.gpt_neox(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:])
        loss = _shifted_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)


def _as(cls, tokenizer):
    """A `cls` model with the same weights as the tests' tiny GPT-NeoX."""
    plain = make_tiny_model(tiny_config(tokenizer))
    model = cls(plain.config)
    model.load_state_dict(plain.state_dict())
    return model


def _batch(skills, tokenizer, n=8):
    rows = skills.validation("3").select(range(n)).select_columns(["input_ids", "attention_mask", "labels"])
    return LMCollator(tokenizer.pad_token_id)([dict(r) for r in rows])


@pytest.mark.parametrize("cls", [IgnoresLogitsToKeep, SlicesLastN])
def test_a_model_that_mishandles_logits_to_keep_is_scored_the_plain_way(cls, skills, tokenizer):
    model = _as(cls, tokenizer)
    batch = _batch(skills, tokenizer)
    assert keep_scored_logits(model, batch) is batch  # the proof failed: no shortcut
    validation = {s: skills.validation(s) for s in ("1", "2", "3")}
    collator = LMCollator(tokenizer.pad_token_id)
    losses = per_skill_loss(model, validation, collator, batch_size=5, device=torch.device("cpu"))
    with torch.no_grad():
        for skill, data in validation.items():
            rows = collator([dict(r) for r in data.select_columns(["input_ids", "attention_mask", "labels"])])
            total, count = scored_token_loss(model(rows["input_ids"], rows["attention_mask"]).logits, rows["labels"])
            assert losses[skill] == pytest.approx(float(total / count), rel=1e-6)


def test_a_transformers_model_keeps_the_shortcut(skills, tokenizer):
    model = make_tiny_model(tiny_config(tokenizer)).train()
    batch = _batch(skills, tokenizer)
    kept = keep_scored_logits(model, batch)
    assert kept is not batch and kept["logits_to_keep"].numel() == 1  # LEGO: one answer position
    assert model.training, "the proof restores the train mode"
    assert keep_scored_logits(model, batch) is not batch  # proven once, then remembered
    # Full-text labels score most positions: nothing to save, the inputs are left as they are.
    everything = LMCollator(tokenizer.pad_token_id)([{"input_ids": r} for r in batch["input_ids"].tolist()])
    assert keep_scored_logits(model, everything) is everything


@pytest.mark.parametrize("cls", [IgnoresLogitsToKeep, SlicesLastN])
def test_training_a_model_that_mishandles_logits_to_keep(cls, skills, tokenizer, tmp_path):
    """Trains (before the proof: a shape error in the first step) exactly as with the shortcut switched off."""
    trajectories = []
    for shortcut in (True, False):
        args = skillit_config(tmp_path / str(shortcut), max_steps=4, rounds=2, mixing="stratified")
        trainer = SkillItTrainer(model=_as(cls, tokenizer), args=args, skills=skills, processing_class=tokenizer)
        trainer.scored_logits_only = shortcut
        trainer.train()
        trajectories.append(trainer.trajectory)
    with_proof, plain = trajectories
    for a, b in zip(with_proof, plain, strict=True):
        assert a["samples"] == b["samples"]
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-6)


class CountingModel(torch.nn.Module):
    """Wraps a model and counts its forward passes (no `logits_to_keep`: no proof passes)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_rows_are_scored_in_batches_and_each_row_alone_agrees(skills, tokenizer):
    """Rows of different lengths (so padded), 10 rows in batches of 4: 3 forward passes, and every row's loss,
    count and greedy correctness equal the row scored alone, unpadded; curricula and discovery read the same."""
    lengths = [6, 9, 12, 7, 10, 5, 11, 8, 6, 9]
    data = skills.train("1").select(range(len(lengths)))
    data = data.map(lambda r, i: {k: r[k][: lengths[i]] for k in ("input_ids", "attention_mask")}, with_indices=True)
    data = data.map(lambda r: {"labels": [-100] * 2 + r["input_ids"][2:]})  # the first two tokens unscored
    model = CountingModel(make_tiny_model(tiny_config(tokenizer)))
    collator = LMCollator(tokenizer.pad_token_id)
    scores = score_rows(model, data, collator, batch_size=4, accuracy=True)
    assert model.calls == 3
    with torch.no_grad():
        for i, row in enumerate(data):
            logits = model.inner(input_ids=torch.tensor([row["input_ids"]])).logits
            labels = torch.tensor([row["labels"]])
            total, count = scored_token_loss(logits, labels)
            assert scores.count[i] == count == lengths[i] - 2
            assert scores.loss_sum[i] == pytest.approx(float(total), rel=1e-5)
            correct = bool((logits[0, 1:-1].argmax(-1) == labels[0, 2:]).all())
            assert scores.correct[i] == correct
    expected = scores.loss_sum / scores.count
    np.testing.assert_allclose(sample_losses(model, data, collator, batch_size=4), expected, rtol=1e-12)
    np.testing.assert_allclose(per_sample_loss(model, data, collator, batch_size=3), expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_ranks_prove_the_shortcut_at_the_same_call(tmp_path, wrapper):
    # Issue 24 review: rank 0's first batch is eligible (one answer token per row), rank 1's is not (long
    # completions). A rank proving alone would run two extra forwards while the other does not: under DDP each
    # forward broadcasts the buffers (gloo failed), under FSDP2 each all-gathers the weights (the gathers paired
    # with the other rank's forwards of another call). The ranks decide together: neither proves at the first call,
    # both at the second.
    script = os.path.join(os.path.dirname(__file__), "scripts", "scored_logits_run.py")
    ranks = run_two_ranks(script, str(tmp_path), *(["--fsdp"] if wrapper == "fsdp" else []), output_dir=tmp_path)
    for rank in ranks:
        assert [call["shortcut"] for call in rank["calls"]] == [False, True, True]
        # 1 plain forward; then 2 proof forwards and 1 with the shortcut; then 1 with the shortcut
        assert [call["forwards"] for call in rank["calls"]] == [1, 4, 5]
        assert rank["verdict"] is True
        assert all(np.isfinite(call["loss"]) for call in rank["calls"])
