"""Checks before anything is deleted or trained (issue 21 item 5): rows and blocks against the model's context, a
tiny recipe model sized to the data, empty or unreadable data files. Each is refused with one line naming the skill
or file, by `hf-skillit train` on a run directory that holds an older run it was told to overwrite: the directory
is left exactly as it was."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from hf_skillit.cli import main
from hf_skillit.synthetic import build_tokenizer

DOCS = 12
LENGTHS = [3 + (7 * d) % 38 for d in range(DOCS)]  # up to 38 tokens


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path):
    """Two skills of text documents, a tokenizer that knows their words, and an old run in `run/`."""
    build_tokenizer([f"{s}{d}" for s in "ab" for d in range(DOCS)]).save_pretrained(tmp_path / "tok")
    for skill in "ab":
        rows = [{"text": " ".join([f"{skill}{d}"] * LENGTHS[d])} for d in range(DOCS)]
        (tmp_path / f"{skill}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "skillit_trajectory.jsonl").write_text('{"round": 1}\n')
    (tmp_path / "run" / "notes.txt").write_text("the old run\n")
    return tmp_path


def recipe(root, tiny=None, streaming=False, **training) -> str:
    raw = {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, **(tiny or {})}, "tokenizer": "tok"},
        "data": {"train_files": {"a": "a.jsonl", "b": "b.jsonl"}, "validation_per_skill": 2, "streaming": streaming},
        "training": {
            "output_dir": "run",
            "overwrite_output_dir": True,
            "mixing": "stratified",
            "max_steps": 2,
            "rounds": 1,
            "per_device_train_batch_size": 2,
            "report_to": "none",
            "use_cpu": True,
            "save_strategy": "no",
            **training,
        },
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


CASES = {
    "block above the context": (
        dict(tiny={"max_position_embeddings": 32}, packing=True, max_length=64),
        r"max_length=64 \(the block size of packing\) is more than the model's context of 32 positions",
    ),
    "rows above the context without max_length": (
        dict(tiny={"max_position_embeddings": 32}),
        r"skill 'a' \(train\) has rows of up to 38 tokens, more than the model's context of 32 positions",
    ),
    "rows above the context, max_length above it": (
        dict(tiny={"max_position_embeddings": 32}, max_length=48),
        r"skill 'a' \(train\) has rows of up to 38 tokens.*max_length=48 lets them through",
    ),
    "streamed rows may reach a max_length above the context": (
        dict(tiny={"max_position_embeddings": 32}, max_length=48, streaming=True),
        r"skill 'a' \(train\) streams rows of up to max_length=48 tokens, more than the model's context of 32",
    ),
    "tiny model without a size on streams": (
        dict(streaming=True),
        r"model.tiny with streaming skills \(a, b\) needs training.max_length \(or model.tiny.max_position_emb",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_row_the_model_cannot_take_is_refused_before_the_run_directory_is_touched(
    workspace, monkeypatch, capsys, case
):
    settings, message = CASES[case]
    monkeypatch.chdir(workspace)
    before = snapshot(workspace / "run")
    assert main(["train", recipe(workspace, **settings)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hf-skillit: error: "), err
    assert re.search(message, err), err
    assert snapshot(workspace / "run") == before


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["train", "dry-run"])
@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"data.train_files\['b'\]: 'b.jsonl' is empty"),
        ('{"text": "b1 b1"\n', r"data.train_files\['b'\]: cannot read b.jsonl: .*(JSON|json)"),
    ],
    ids=["empty", "unreadable"],
)
def test_an_empty_or_unreadable_file_is_one_line_naming_skill_and_file(
    workspace, monkeypatch, capsys, streaming, dry_run, content, message
):
    (workspace / "b.jsonl").write_text(content)
    monkeypatch.chdir(workspace)
    before = snapshot(workspace / "run")
    path = recipe(workspace, max_length=32, streaming=streaming)
    assert main(["train", path, *(["--dry-run"] if dry_run else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert snapshot(workspace / "run") == before


def test_rows_within_the_context_train(workspace, monkeypatch):
    # The same recipe with rows that fit (truncated to 32 tokens) trains, and replaces the old run.
    monkeypatch.chdir(workspace)
    assert main(["train", recipe(workspace, tiny={"max_position_embeddings": 32}, max_length=32)]) == 0
    assert "notes.txt" in snapshot(workspace / "run")
    trajectory = (workspace / "run" / "skillit_trajectory.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in trajectory] == [1]


def test_a_tiny_model_is_sized_to_the_longest_row(workspace, monkeypatch):
    # A document of 100 tokens: a tiny model without max_length gets 100 positions (it had 64, and failed).
    with open(workspace / "a.jsonl", "a") as f:
        f.write(json.dumps({"text": " ".join(["a1"] * 100)}) + "\n")
    monkeypatch.chdir(workspace)
    from hf_skillit.recipes import build, load_recipe

    parts = build(load_recipe(recipe(workspace)))
    assert parts.model.config.max_position_embeddings == 100
