"""Packing per skill, chunking and truncation (`hf_skillit.packing`), and the trained tokens the trajectory counts.

The corpus: two skills whose documents are runs of one word each, the word naming the skill and the document
(`a7` is document 7 of skill `a`), of lengths 3 to 40 tokens. So every token of a training batch tells which skill
and which document it came from, and a hand count of the tokens is a sum of document lengths.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from conftest import StopAt, tiny_config

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet
from hf_skillit.packing import pack, prepare_split
from hf_skillit.synthetic import build_tokenizer, make_tiny_model

SKILLS = ("a", "b")
DOCS = 30
LENGTHS = [3 + (7 * d) % 38 for d in range(DOCS)]  # 3..40 tokens, deterministic


def document(skill: str, d: int) -> str:
    return " ".join([f"{skill}{d}"] * LENGTHS[d])


@pytest.fixture(scope="module")
def words_tokenizer():
    return build_tokenizer([f"{s}{d}" for s in SKILLS for d in range(DOCS)])


def corpus(skill: str) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [document(skill, d) for d in range(DOCS)]})


def origin(tokenizer, token: int) -> str | None:
    """The word of a token (None for EOS)."""
    return None if token == tokenizer.eos_token_id else tokenizer.convert_ids_to_tokens(int(token))


class RecordingTrainer(SkillItTrainer):
    """Keeps the rows (unpadded input_ids) of every training batch, as `training_step` receives them."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows = [
            ids[mask == 1].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        ]
        self.batches.append(rows)
        return super().training_step(model, inputs, num_items_in_batch)


def train(tmp_path, tokenizer, skills, name="run", resume=None, callbacks=(), **overrides):
    settings = dict(
        output_dir=str(tmp_path / name),
        mixing="stratified",
        rounds=2,
        max_steps=8,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        packing=True,
        max_length=16,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    trainer = RecordingTrainer(
        model=make_tiny_model(tiny_config(tokenizer)),
        args=SkillItConfig(**{**settings, **overrides}),
        skills=skills,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.batches = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer, trainer.batches


# ----- prepare_split, by hand ------------------------------------------------------------------------------------


def test_packing_concatenates_documents_with_eos_and_cuts_full_blocks(words_tokenizer):
    eos = words_tokenizer.eos_token_id
    data = corpus("a").select(range(4))  # 3 + 10 + 17 + 24 tokens, + 4 EOS = 58
    stream = [t for d in range(4) for t in [*words_tokenizer(document("a", d))["input_ids"], eos]]
    packed, counts = prepare_split(data, "a", "train", tokenizer=words_tokenizer, max_length=16, packing=True)
    assert packed["input_ids"] == [stream[i : i + 16] for i in range(0, 48, 16)]  # 58 // 16 = 3 full blocks
    assert (counts.documents, counts.tokens, counts.rows, counts.kept, counts.dropped) == (4, 58, 3, 48, 10)
    # Validation keeps the last partial block: every held-out token is scored.
    held, counts = prepare_split(data, "a", "validation", tokenizer=words_tokenizer, max_length=16, packing=True)
    assert held["input_ids"] == [stream[i : i + 16] for i in range(0, 58, 16)] and counts.dropped == 0
    # Packing packed rows changes nothing (trainers re-prepare skills that graph learning prepared).
    assert pack(packed, 16, drop_remainder=True)["input_ids"] == packed["input_ids"]
    assert pack(held, 16, drop_remainder=False)["input_ids"] == held["input_ids"]
    # A stream is packed into the same blocks, as it is read.
    streamed, none = prepare_split(
        data.to_iterable_dataset(), "a", "train", tokenizer=words_tokenizer, max_length=16, packing=True
    )
    assert none is None and [row["input_ids"] for row in streamed] == packed["input_ids"]
    assert [row["input_ids"] for row in streamed.skip(2)] == packed["input_ids"][2:]


def test_chunking_keeps_every_token_and_truncation_counts_what_it_drops(words_tokenizer):
    data = corpus("a").select(range(4))
    eos = words_tokenizer.eos_token_id
    chunked, counts = prepare_split(
        data, "a", "train", tokenizer=words_tokenizer, max_length=16, long_documents="chunk"
    )
    docs = [[*words_tokenizer(document("a", d))["input_ids"], eos] for d in range(4)]
    assert chunked["input_ids"] == [doc[i : i + 16] for doc in docs for i in range(0, len(doc), 16)]
    assert counts.dropped == 0 and counts.rows == 1 + 1 + 2 + 2
    truncated, counts = prepare_split(data, "a", "train", tokenizer=words_tokenizer, max_length=16)
    # Truncation is today's tokenization: no EOS, the first 16 tokens.
    assert truncated["input_ids"] == [doc[:-1][:16] for doc in docs]
    assert (counts.tokens, counts.kept, counts.dropped) == (54, 3 + 10 + 16 + 16, 1 + 8)


def test_packing_refuses_a_skill_shorter_than_one_block(words_tokenizer):
    with pytest.raises(ValueError, match=r"skill 'a' \(train\) has 4 tokens, fewer than one block of max_length=16"):
        prepare_split(corpus("a").select([0]), "a", "train", tokenizer=words_tokenizer, max_length=16, packing=True)


# ----- training on packed skills -----------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_blocks_never_mix_skills_and_no_validation_text_is_trained_on(tmp_path, words_tokenizer, streaming):
    train_sets = {s: corpus(s) for s in SKILLS}
    if streaming:
        train_sets = {s: ds.to_iterable_dataset().repeat(None) for s, ds in train_sets.items()}
    skills = SkillSet.from_dict(train_sets, validation=5, seed=1)
    held_out = {w for s in SKILLS for text in skills.validation(s)["text"] for w in text.split()}
    trainer, batches = train(tmp_path, words_tokenizer, skills, max_steps=12, rounds=3)
    rows = [row for batch in batches for row in batch]
    assert len(rows) == 12 * 4
    seen = set()
    for row in rows:
        assert len(row) == 16, "every training row is one full block"
        words = {origin(words_tokenizer, t) for t in row} - {None}
        assert len({w[0] for w in words}) == 1, f"a block mixes skills: {sorted(words)}"
        seen |= words
    assert seen and not seen & held_out, f"validation documents trained on: {sorted(seen & held_out)}"
    # The trajectory counts blocks and their tokens: every token of a block has a label.
    for record in trainer.trajectory:
        assert sum(record["samples"].values()) == 16
        assert record["tokens"] == {s: 16 * n for s, n in record["samples"].items()}


def test_trajectory_tokens_equal_a_hand_count_of_the_batches(tmp_path, words_tokenizer):
    # Without packing, rows are whole documents of different lengths: the tokens of a round are the summed lengths
    # of its rows, per skill (no labels: every non-padding token is trained).
    skills = SkillSet.from_dict({s: corpus(s) for s in SKILLS}, validation=5, seed=1)
    trainer, batches = train(tmp_path, words_tokenizer, skills, packing=False, max_length=None)
    hand = [dict.fromkeys(SKILLS, 0) for _ in range(2)]
    for step, batch in enumerate(batches):
        for row in batch:
            hand[step // 4][origin(words_tokenizer, row[0])[0]] += len(row)
    assert [r["tokens"] for r in trainer.trajectory] == hand
    assert len({n for r in hand for n in r.values()}) > 1


def test_packed_resume_mid_round_trains_the_same_blocks(tmp_path, words_tokenizer):
    skills = SkillSet.from_dict(
        {"a": corpus("a"), "b": corpus("b").to_iterable_dataset().repeat(None)}, validation=5, seed=1
    )
    settings = dict(mixing="no_graph", eta=2.0, save_strategy="steps", save_steps=3)
    _, whole = train(tmp_path, words_tokenizer, skills, name="whole", **settings)
    whole_trajectory = json.loads(json.dumps(_trajectory(tmp_path / "whole")))
    train(tmp_path, words_tokenizer, skills, name="cut", callbacks=[StopAt(3)], **settings)
    resumed, after = train(tmp_path, words_tokenizer, skills, name="cut", resume=True, **settings)
    assert after == whole[3:], "the resumed run trains the uninterrupted run's blocks from step 4 on"
    for a, b in zip(whole_trajectory, resumed.trajectory, strict=True):
        assert (a["samples"], a["tokens"], a["global_step"]) == (b["samples"], b["tokens"], b["global_step"])
        assert a["p"] == pytest.approx(b["p"]) and a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    assert np.sum([sum(r["tokens"].values()) for r in resumed.trajectory]) == 8 * 4 * 16


def _trajectory(path):
    return [json.loads(line) for line in (path / "skillit_trajectory.jsonl").read_text().splitlines()]


# ----- tokens in recipes: the budget, the dry run, the run summary --------------------------------------------------


def test_a_token_budget_sets_max_steps_with_packing(tmp_path):
    # 4 rows of 128 tokens x 2 accumulated = 1024 tokens a step: 100000 tokens are 97.7 steps, so 98, then 99
    # (a multiple of the 3 rounds).
    args = SkillItConfig(
        output_dir=str(tmp_path),
        packing=True,
        max_length=128,
        token_budget=100_000,
        rounds=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        use_cpu=True,
        report_to="none",
    )
    assert (args.tokens_per_step, args.max_steps) == (1024, 99)
    with pytest.raises(ValueError, match="token_budget needs packing=True"):
        SkillItConfig(output_dir=str(tmp_path), max_length=128, token_budget=100_000, use_cpu=True)
    with pytest.raises(ValueError, match="set token_budget or max_steps, not both"):
        SkillItConfig(output_dir=str(tmp_path), packing=True, max_length=8, token_budget=64, max_steps=6, use_cpu=True)


def text_recipe(root, tokenizer, **training) -> str:
    """Skills a and b of the corpus as jsonl files (all 30 documents trained on; validation from other files)."""
    import yaml

    tokenizer.save_pretrained(root / "tok")
    for skill in SKILLS:
        corpus(skill).to_json(root / f"{skill}.jsonl")
        corpus(skill).select(range(3)).to_json(root / f"{skill}_val.jsonl")
    raw = {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}, "tokenizer": "tok"},
        "data": {
            "train_files": {s: f"{s}.jsonl" for s in SKILLS},
            "validation_files": {s: f"{s}_val.jsonl" for s in SKILLS},
        },
        "training": {
            "output_dir": "run",
            "mixing": "stratified",
            "rounds": 2,
            "per_device_train_batch_size": 4,
            "report_to": "none",
            "use_cpu": True,
            "save_strategy": "no",
            "disable_tqdm": True,
            **training,
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return str(root / "recipe.yaml")


def test_dry_run_prints_the_steps_of_a_token_budget_and_the_tokens_per_skill(
    tmp_path, words_tokenizer, monkeypatch, capsys
):
    from hf_skillit.cli import main

    monkeypatch.chdir(tmp_path)
    path = text_recipe(tmp_path, words_tokenizer, packing=True, max_length=16, token_budget=1000)
    assert main(["train", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Tokens: token_budget 1,000: 16 steps x 64 tokens = 1,024 tokens" in out
    assert "Training text per skill" not in out  # the plain dry run tokenizes nothing (issue 24: under 2 s)
    assert main(["train", path, "--dry-run", "--measure"]) == 0
    out = capsys.readouterr().out
    tokens = sum(LENGTHS) + DOCS  # every document and its EOS
    # 1000 tokens at 4 blocks of 16 a step: 15.6 steps, so 16 (a multiple of the 2 rounds).
    assert "Tokens: token_budget 1,000: 16 steps x 64 tokens = 1,024 tokens" in out
    for skill in SKILLS:
        table = out[out.index("Training text per skill") :].splitlines()
        row = next(line.split() for line in table if line.split()[:1] == [skill])
        assert row == [
            skill,
            str(DOCS),
            f"{tokens:,}",
            str(tokens // 16),
            f"{tokens % 16:,}",
            f"({tokens % 16 / tokens:.1%})",
        ]


def test_run_summary_prints_token_shares_and_what_truncation_dropped(tmp_path, words_tokenizer, monkeypatch, capsys):
    from hf_skillit.cli import main

    monkeypatch.chdir(tmp_path)
    path = text_recipe(tmp_path, words_tokenizer, max_length=16, max_steps=4)
    assert main(["train", path]) == 0
    out = capsys.readouterr().out
    trajectory = _trajectory(tmp_path / "run")
    tokens = {s: sum(r["tokens"][s] for r in trajectory) for s in SKILLS}
    dropped = sum(max(0, n - 16) for n in LENGTHS)  # truncation keeps 16 tokens of each document, no EOS
    lines = out[out.index("Trained per skill") :].splitlines()
    for skill in SKILLS:
        cells = next(line for line in lines if line.startswith(f"{skill} ")).split()
        assert cells[4:6] == [f"{tokens[skill]:,}", f"{tokens[skill] / sum(tokens.values()):.4f}"]
        assert " ".join(cells[6:]) == f"{dropped:,} of {sum(LENGTHS):,} ({dropped / sum(LENGTHS):.1%})"


def test_tokenizing_in_several_processes_gives_the_same_rows(words_tokenizer):
    # dataset_num_proc: the map-style tokenization runs in 2 processes; rows and counts are the one-process ones.
    data = datasets.concatenate_datasets([corpus("a"), corpus("b")])
    for packing in (False, True):
        one = prepare_split(data, "a", "train", tokenizer=words_tokenizer, max_length=16, packing=packing)
        two = prepare_split(data, "a", "train", tokenizer=words_tokenizer, max_length=16, packing=packing, num_proc=2)
        assert one[0]["input_ids"] == two[0]["input_ids"] and one[1] == two[1]
