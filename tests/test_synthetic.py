import math
import re
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer
from transformers.modeling_outputs import CausalLMOutput

from hf_skillit.synthetic import (
    answer_accuracy,
    build_tokenizer,
    encode,
    lego_parent,
    make_addition,
    make_lego,
    make_tiny_model,
    skill_counts,
    tiny_model_config,
)

LEGO_RE = re.compile(r"^Input : (.+) \. Output : ([a-z]) = ([01]) \.$")
ADDITION_RE = re.compile(r"^Input : A = ([\d ]+) \+ ([\d ]+) , A (\d) = \? Output : (\d) \.$")


def solve_lego(text: str) -> tuple[str, int, dict[str, int], dict[str, str | None]]:
    """Answer and depth of the queried variable, and every variable's depth and parent, by following the clauses."""
    clauses, query, _ = LEGO_RE.match(text).groups()
    rules = {}
    for clause in clauses.split(" , "):
        lhs, eq, op, rhs = clause.split(" ")
        assert eq == "=" and op in ("val", "not")
        rules[lhs] = (op, rhs)

    def resolve(var: str) -> tuple[int, int]:
        op, rhs = rules[var]
        if rhs in "01":
            assert op == "val"
            return int(rhs), 0
        value, depth = resolve(rhs)
        return value ^ (op == "not"), depth + 1

    depths = {var: resolve(var)[1] for var in rules}
    parents = {var: None if rhs in "01" else rhs for var, (_, rhs) in rules.items()}
    value, depth = resolve(query)
    return str(value), depth, depths, parents


def test_lego_hand_solved_example():
    # The paper's example: chain r -> y -> b -> m -> q, so b is the third variable.
    text = "Input : b = not y , r = val 1 , m = val b , q = val m , y = not r . Output : b = 1 ."
    assert solve_lego(text)[:2] == ("1", 2)
    tree = "Input : c = val 1 , y = not w , v = val c , w = not c . Output : y = 1 ."
    assert solve_lego(tree)[:2] == ("1", 2)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_lego_chain_labels(k):
    ds = make_lego(60, k=k, seed=1)
    for row in ds:
        assert row["text"] == f"{row['prompt']} {row['answer']} ."
        answer, depth, depths, _ = solve_lego(row["text"])
        assert row["answer"] == answer
        assert row["skill"] == str(depth + 1)
        # A chain has exactly one variable at every depth.
        assert sorted(depths.values()) == list(range(k))
        assert len(set(row["text"].split()) & set("abcdefghijklmnopqrstuvwxyz")) == k


def test_lego_tree_labels():
    ds = make_lego(60, k=4, structure="tree", seed=2)
    for row in ds:
        answer, depth, depths, parents = solve_lego(row["text"])
        assert row["answer"] == answer
        skill = int(row["skill"])
        assert depth == int(math.log2(skill))
        # Edges 1->2, 1->3, 2->4 of Appendix D.1: node 2 is the depth-1 variable with a child.
        by_node = {1: next(v for v, d in depths.items() if d == 0), 4: next(v for v, d in depths.items() if d == 2)}
        by_node[2] = parents[by_node[4]]
        by_node[3] = next(v for v, d in depths.items() if d == 1 and v != by_node[2])
        query = LEGO_RE.match(row["text"]).group(2)
        assert by_node[skill] == query
    assert [lego_parent(i, "tree") for i in range(1, 8)] == [None, 1, 1, 2, 2, 3, 3]
    assert [lego_parent(i, "chain") for i in range(1, 4)] == [None, 1, 2]


@pytest.mark.parametrize("reverse", [False, True])
def test_addition_labels(reverse):
    ds = make_addition(90, digits=3, seed=3, reverse=reverse)
    for row in ds:
        a, b, position, answer = ADDITION_RE.match(row["text"]).groups()
        a, b = (int(x.replace(" ", "")[:: -1 if reverse else 1]) for x in (a, b))
        assert answer == row["answer"] == str((a + b) // 10 ** int(position) % 10)
        assert row["skill"] == str(int(position) + 1)
        assert row["prompt"].endswith("Output :")
    assert make_addition(1, seed=0, proportions=[0, 1, 0])[0]["skill"] == "2"


def test_proportions_give_exact_counts():
    assert skill_counts(10, 3) == [4, 3, 3]
    assert skill_counts(7, 3, [1, 0, 1]) == [4, 0, 3]
    assert Counter(make_lego(110, k=5, proportions=[1, 1, 1, 3, 5])["skill"]) == {
        "1": 10,
        "2": 10,
        "3": 10,
        "4": 30,
        "5": 50,
    }
    assert Counter(make_addition(45, proportions=[13, 14, 18])["skill"]) == {"1": 13, "2": 14, "3": 18}
    with pytest.raises(ValueError):
        skill_counts(10, 3, [1, 1])


@pytest.mark.parametrize("make", [make_lego, make_addition])
def test_generators_are_deterministic(make):
    assert make(20, seed=5).to_list() == make(20, seed=5).to_list()
    assert make(20, seed=5)["text"][:] != make(20, seed=6)["text"][:]


def test_tokenizer_round_trip_and_reload(tmp_path):
    tokenizer = build_tokenizer()
    datasets = (
        make_lego(50),
        make_lego(50, k=4, structure="tree"),
        make_addition(50),
        make_addition(50, reverse=True),
    )
    texts = [text for ds in datasets for text in ds["text"]]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert (reloaded.pad_token_id, reloaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_encode_masks_all_but_answer():
    tokenizer = build_tokenizer()
    ds = make_lego(8, k=3, seed=0).add_column("id", list(range(8)))
    encoded = encode(ds, tokenizer, max_length=30)
    assert set(encoded.column_names) == {"input_ids", "attention_mask", "labels", "skill", "id"}
    for raw, row in zip(ds, encoded, strict=True):
        prompt_len = len(raw["prompt"].split())
        n = len(raw["text"].split()) + 1
        assert len(row["input_ids"]) == 30 and sum(row["attention_mask"]) == n
        assert row["input_ids"][n - 1] == tokenizer.eos_token_id
        scored = [i for i, label in enumerate(row["labels"]) if label != -100]
        assert scored == [prompt_len]
        assert row["labels"][prompt_len] == tokenizer.convert_tokens_to_ids(raw["answer"])
    full = encode(ds, tokenizer, answer_only=False, max_length=30)[0]
    n = sum(full["attention_mask"])
    assert full["labels"][:n] == full["input_ids"][:n] and set(full["labels"][n:]) == {-100}


class LookupModel(torch.nn.Module):
    """Stub LM whose logits after a known prompt put all mass on that prompt's answer."""

    def __init__(self, answers: dict[tuple[int, ...], int], vocab_size: int):
        super().__init__()
        self.answers, self.vocab_size = answers, vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                if (answer := self.answers.get(tuple(row[: t + 1]))) is not None:
                    logits[b, t, answer] = 1.0
        return CausalLMOutput(logits=logits)


def test_answer_accuracy():
    tokenizer = build_tokenizer()
    ds = make_lego(40, k=3, seed=0)
    answers = {
        tuple(tokenizer(p, add_special_tokens=False)["input_ids"]): tokenizer.convert_tokens_to_ids(a)
        for p, a in zip(ds["prompt"], ds["answer"], strict=True)
    }
    assert answer_accuracy(LookupModel(answers, len(tokenizer)), tokenizer, ds, batch_size=16) == {
        "1": 1.0,
        "2": 1.0,
        "3": 1.0,
    }
    # All-zero logits make the argmax the pad token: never right.
    assert set(answer_accuracy(LookupModel({}, len(tokenizer)), tokenizer, ds).values()) == {0.0}
    model = make_tiny_model(tokenizer=tokenizer, num_layers=1, hidden_size=32)
    model.train()
    acc = answer_accuracy(model, tokenizer, encode(ds, tokenizer), batch_size=7)
    assert set(acc) == {"1", "2", "3"} and all(0.0 <= v <= 1.0 for v in acc.values())
    assert model.training


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_tiny_models_are_seeded(family):
    tokenizer = build_tokenizer()
    kwargs = {"family": family, "tokenizer": tokenizer, "hidden_size": 32, "num_layers": 1, "num_heads": 2}
    a, b, c = make_tiny_model(seed=0, **kwargs), make_tiny_model(seed=0, **kwargs), make_tiny_model(seed=1, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a.parameters(), c.parameters(), strict=True))
    assert a.config.vocab_size == len(tokenizer) and a.config.pad_token_id == tokenizer.pad_token_id
    ids = torch.tensor([[5, 6, 7]])
    assert a(input_ids=ids).logits.shape == (1, 3, len(tokenizer))


def test_rotary_fraction():
    config = tiny_model_config(vocab_size=10, rotary_fraction=1.0)
    assert config.rope_parameters["partial_rotary_factor"] == 1.0
    with pytest.raises(ValueError):
        tiny_model_config(family="gpt2", vocab_size=10, rotary_fraction=0.5)
