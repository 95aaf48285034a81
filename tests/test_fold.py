"""The table-fold suite (issue 11): values checked by hand against the documented table, and its recipe builds."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from hf_skillit.recipes import build, load_recipe
from hf_skillit.synthetic import build_tokenizer, encode, fold_skills, fold_table, make_fold
from hf_skillit.synthetic.fold import fold_sample

ROOT = Path(__file__).resolve().parents[1]
T4 = [[2, 0, 3, 0], [1, 2, 0, 0], [1, 0, 3, 2], [3, 1, 3, 3]]  # fold_table(4), as its docstring states


class Digits(random.Random):
    """A generator that hands out the given symbols in order, so a sample's inputs are chosen by the test."""

    def __init__(self, digits):
        super().__init__(0)
        self.digits = list(digits)

    def randrange(self, *args):
        return self.digits.pop(0)


def test_default_table_is_the_documented_one_and_not_latin():
    assert fold_table(4) == T4
    # Row 1 repeats 0 and column 1 repeats 0: not a Latin square, so one argument alone says something about T.
    assert len(set(T4[1])) < 4
    assert {v for row in T4 for v in row} == {0, 1, 2, 3}
    for base in (2, 3, 5):
        table = fold_table(base)
        assert {v for row in table for v in row} == set(range(base))
        assert not all(len(set(row)) == base for row in table) or not all(
            len({table[y][x] for y in range(base)}) == base for x in range(base)
        )


@pytest.mark.parametrize(
    "digits, skill, answer",
    [
        # y1 = T[2][1] = 0; y2 = T[0][3] = 0; y3 = T[0][0] = 2
        ([2, 1, 3, 0, 1], 1, "0"),
        ([2, 1, 3, 0, 1], 2, "0"),
        ([2, 1, 3, 0, 1], 3, "2"),
        # y1 = T[3][2] = 3; y2 = T[3][0] = 3; y3 = T[3][1] = 1 (the last shown symbol is never read by skill 3)
        ([3, 2, 0, 1, 3], 3, "1"),
        ([0, 0, 0, 0, 0], 1, "2"),
    ],
)
def test_sample_by_hand(digits, skill, answer):
    row = fold_sample(Digits(digits), skill, base=4, digits=5)
    prompt = f"{' '.join(map(str, digits))} , A {skill} ="
    assert row == {"prompt": prompt, "answer": answer, "text": f"{prompt} {answer}", "skill": str(skill)}


def test_make_fold_counts_determinism_and_tokens():
    ds = make_fold(300, proportions=[1, 1, 4], seed=3)
    assert Counter(ds["skill"]) == {"1": 50, "2": 50, "3": 200}
    assert ds["text"] == make_fold(300, proportions=[1, 1, 4], seed=3)["text"]
    assert ds["text"] != make_fold(300, proportions=[1, 1, 4], seed=4)["text"]
    assert fold_skills(5, 3) == ["1", "2", "3"] and fold_skills(5, None) == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="num_skills"):
        make_fold(10, digits=3, num_skills=3)
    # Every row recomputed from its shown symbols; every word is in the synthetic tokenizer's vocabulary.
    for row in ds:
        x = [int(t) for t in row["prompt"].split()[:5]]
        y = x[0]
        for i in range(1, int(row["skill"]) + 1):
            y = T4[y][x[i]]
        assert row["answer"] == str(y)
    tokenizer = build_tokenizer()
    ids = encode(ds.select(range(20)), tokenizer)["input_ids"]
    assert tokenizer.unk_token_id not in {t for row in ids for t in row}


def test_fold_recipe_builds(monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = load_recipe("recipes/fold_pretrain.yaml", ["data.num_train_samples=300", "data.validation_per_skill=10"])
    parts = build(recipe)
    assert list(parts.skills.train_skills) == ["1", "2", "3"]
    assert list(parts.graph.train_skills) == ["1", "2", "3"] and parts.graph.matrix[1, 2] == 0.5  # edge 2 -> 3
    assert recipe.training.mixing == "skill_it" and recipe.model.tiny["family"] == "gpt2"
    # The saved skill-stratified reference the summary compares with ran on this recipe's budget and seed.
    (reference,) = [json.loads(line) for line in Path(recipe.report.reference).read_text().splitlines()]
    assert reference["mixing"] == "stratified" and reference["seed"] == recipe.training.seed
    assert reference["max_steps"] == recipe.training.max_steps
    assert reference["budget"] == recipe.training.max_steps * recipe.training.per_device_train_batch_size
    assert set(reference["loss"]) == {"1", "2", "3"}
    batch = torch.tensor(parts.skills.validation("1")[:4]["input_ids"])
    assert parts.model(input_ids=batch).logits.shape[:2] == batch.shape
