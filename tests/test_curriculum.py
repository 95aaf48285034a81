"""Curriculum baselines: difficulty buckets, pacing, Varshney's skill curriculum, and a trainer run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from torch import nn

from hf_skillit import LMCollator, SkillItTrainer, SkillSet
from hf_skillit.curriculum import (
    curriculum_baseline,
    curriculum_setup,
    difficulty_order,
    pacing_buckets,
    sample_losses,
    skill_curriculum_schedule,
    skill_curriculum_setup,
)

VOCAB = 8


class UnigramLM(nn.Module):
    """Predicts the same distribution softmax(w) at every position: a row answering token x scores
    logsumexp(w) - w[x], so the difficulty of every row is known by hand."""

    def __init__(self, weights: list[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weights))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.w.expand(*input_ids.shape, VOCAB))


# Token 7 is the easiest answer, token 2 the hardest.
WEIGHTS = [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def row_loss(answer: int) -> float:
    return math.log(sum(math.exp(w) for w in WEIGHTS)) - WEIGHTS[answer]


def scored_pool(answers: dict[str, list[int]]) -> SkillSet:
    """Skills whose rows are `1 <answer>` with the answer scored; `id` numbers rows across skills in order."""
    train, validation, next_id = {}, {}, 0
    for name, values in answers.items():
        rows = [
            {"input_ids": [1, a], "attention_mask": [1, 1], "labels": [-100, a], "id": next_id + i}
            for i, a in enumerate(values)
        ]
        next_id += len(values)
        train[name] = datasets.Dataset.from_list(rows)
        validation[name] = datasets.Dataset.from_list(rows[:2])
    return SkillSet(train, validation)


ANSWERS = {"a": [3, 7, 2, 5], "b": [6, 4, 7], "c": [2, 3, 6]}  # ids 0-3, 4-6, 7-9


def test_sample_losses_are_each_rows_scored_token_loss():
    pool = scored_pool(ANSWERS)
    losses = sample_losses(UnigramLM(WEIGHTS), pool.train("a"), LMCollator(pad_token_id=0), batch_size=3)
    np.testing.assert_allclose(losses, [row_loss(a) for a in ANSWERS["a"]], rtol=1e-6)


def test_difficulty_order_and_buckets():
    scores = [0.5, 0.1, 0.9, 0.1, 0.3]
    assert difficulty_order(scores).tolist() == [1, 3, 4, 0, 2]  # ties keep row order
    assert difficulty_order(scores, anti=True).tolist() == [2, 0, 4, 3, 1]
    buckets = pacing_buckets(np.arange(10), 3)
    assert [b.tolist() for b in buckets] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="non-empty"):
        pacing_buckets(np.arange(2), 3)


@pytest.mark.parametrize("anti", [False, True])
def test_curriculum_buckets_and_pacing(anti):
    pool = scored_pool(ANSWERS)
    buckets, schedule = curriculum_setup(pool, UnigramLM(WEIGHTS), LMCollator(pad_token_id=0), 3, anti=anti)

    # Ranking by hand: answers 7 (ids 1, 6), 6 (4, 9), 5 (3), 4 (5), 3 (0, 8), 2 (2, 7), ties in pool order.
    ranked = [1, 6, 4, 9, 3, 5, 0, 8, 2, 7]
    if anti:
        ranked = ranked[::-1]
    assert buckets.train_skills == ("difficulty_1", "difficulty_2", "difficulty_3")
    assert [buckets.train(n)["id"] for n in buckets.train_skills] == [ranked[:3], ranked[3:6], ranked[6:]]
    # Evaluation stays on the original skills.
    assert buckets.eval_skills == ("a", "b", "c")

    # Phase i draws each of the top g(i) = floor(i * 10 / 3) rows with probability 1 / g(i), and nothing else.
    assert len(schedule) == 3
    for phase, weights in enumerate(schedule, start=1):
        top = phase * 10 // 3
        per_row = {}
        for name in buckets.train_skills:
            rows = buckets.train(name)["id"]
            for row in rows:
                per_row[row] = weights[name] / len(rows)
        assert {row for row, p in per_row.items() if p > 0} == set(ranked[:top])
        for row in ranked[:top]:
            assert per_row[row] == pytest.approx(1 / top)


def test_skill_curriculum_schedule_matches_varshney_by_hand():
    # frac = 0.4, order b, a, c: phases read 1, 1.4 and 1.8 groups, then 3 (all); over 36 rounds that is
    # 5, 7, 9 and 15 rounds.
    schedule = skill_curriculum_schedule(["b", "a", "c"], rounds=36, frac=0.4)
    phase_1 = {"b": 1.0, "a": 0.0, "c": 0.0}
    phase_2 = {"b": 0.4 / 1.4, "a": 1 / 1.4, "c": 0.0}
    phase_3 = {"b": 0.4 / 1.8, "a": 0.4 / 1.8, "c": 1 / 1.8}
    final = {"b": 1 / 3, "a": 1 / 3, "c": 1 / 3}
    expected = [phase_1] * 5 + [phase_2] * 7 + [phase_3] * 9 + [final] * 15
    assert len(schedule) == 36
    for got, want in zip(schedule, expected, strict=True):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name])
    # The shortest schedule: one round per phase.
    short = skill_curriculum_schedule(["b", "a", "c"], rounds=4, frac=0.4)
    assert [max(w, key=w.get) for w in short[:3]] == ["b", "a", "c"]
    assert short[3] == pytest.approx(final)
    with pytest.raises(ValueError, match="rounds must be >= 4"):
        skill_curriculum_schedule(["b", "a", "c"], rounds=3)


def test_skill_curriculum_ranks_skills_by_average_loss():
    pool = scored_pool(ANSWERS)
    collator = LMCollator(pad_token_id=0)
    # Mean losses: b (answers 6, 4, 7) < a (3, 7, 2, 5) < c (2, 3, 6).
    order, schedule = skill_curriculum_setup(pool, UnigramLM(WEIGHTS), collator, rounds=4)
    assert order == ["b", "a", "c"]
    assert schedule == skill_curriculum_schedule(["b", "a", "c"], rounds=4)
    anti_order, _ = skill_curriculum_setup(pool, UnigramLM(WEIGHTS), collator, rounds=4, anti=True)
    assert anti_order == ["c", "a", "b"]
    skills, by_name = curriculum_baseline("skill_anticurriculum", pool, UnigramLM(WEIGHTS), collator, rounds=4)
    assert skills is pool and by_name == skill_curriculum_schedule(["c", "a", "b"], rounds=4)
    with pytest.raises(ValueError, match="unknown curriculum"):
        curriculum_baseline("pacing", pool, UnigramLM(WEIGHTS), collator, rounds=4)


def test_trainer_runs_the_curriculum_within_the_allowed_buckets(make_config, tokenizer, tiny_model, skills):
    model = tiny_model()
    buckets, schedule = curriculum_setup(skills, model, LMCollator(pad_token_id=tokenizer.pad_token_id), 3)
    args = make_config(mixing="fixed", fixed_weights=schedule, rounds=3, max_steps=12, logging_steps=500)
    trainer = SkillItTrainer(model=model, args=args, skills=buckets, processing_class=tokenizer)
    trainer.train()
    trajectory = trainer.trajectory
    assert len(trajectory) == 3
    for phase, record in enumerate(trajectory, start=1):
        assert sum(record["samples"].values()) == 32
        assert record["samples"]["difficulty_1"] > 0
        for b in range(phase + 1, 4):
            assert record["samples"][f"difficulty_{b}"] == 0
        assert set(record["eval_loss"]) == {"1", "2", "3"}


@pytest.mark.parametrize("mixing", ["curriculum", "skill_anticurriculum"])
@pytest.mark.parametrize("bf16", [True, False])
def test_the_trainer_ranks_the_rows_in_the_runs_precision(make_config, tokenizer, tiny_model, skills, mixing, bf16):
    """The curricula score the data when the trainer is built, before accelerate wraps the model's forward in the
    run's autocast: the trainer hands them that autocast, so a bf16 run ranks in bf16 and an fp32 run in fp32."""
    model = tiny_model()
    seen = []
    model.register_forward_pre_hook(
        lambda module, inputs: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    args = make_config(mixing=mixing, rounds=4, max_steps=8, bf16=bf16)
    SkillItTrainer(model=model, args=args, skills=skills, processing_class=tokenizer)
    assert seen, "the curriculum scored nothing"
    assert all(enabled == bf16 for enabled, _ in seen)
    if bf16:
        assert all(dtype == torch.bfloat16 for _, dtype in seen)
