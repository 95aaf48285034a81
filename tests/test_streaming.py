"""Streaming skills at corpus scale: local jsonl shards read through `load_dataset(..., streaming=True)`, one source
per skill, with each source's first rows held out for validation (tests/scripts/streaming_run.py builds the run)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import skillit_config, tiny_config

from hf_skillit import SkillItTrainer, SkillSet
from hf_skillit.synthetic import make_tiny_model
from hf_skillit.trainer import STATE_NAME

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import streaming_run  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
ACCUMULATION = 2
STEPS_PER_ROUND = streaming_run.MAX_STEPS // streaming_run.ROUNDS


def read_rows(path: Path) -> list[list[list]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def per_source(batches: list[list[list]]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {skill: [] for skill in streaming_run.SKILLS}
    for batch in batches:
        for skill, row in batch:
            ids[skill].append(row)
    return ids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus")
    streaming_run.write_corpus(str(root), rows_per_skill=400, shards=3)
    return str(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("reference")
    trainer = streaming_run.build_trainer(str(root / "run"), corpus, str(root / "rows.jsonl"))
    trainer.train()
    return {"trainer": trainer, "trajectory": trainer.trajectory, "rows": read_rows(root / "rows.jsonl")}


def test_training_reads_each_source_in_order_after_its_held_out_prefix(reference):
    trainer = reference["trainer"]
    for skill in streaming_run.SKILLS:
        assert trainer.skills.validation(skill)["id"][:] == list(range(streaming_run.HOLDOUT))
    trained = per_source(reference["rows"])
    for skill, ids in trained.items():
        counted = sum(record["samples"][skill] for record in reference["trajectory"])
        assert len(ids) == counted > 0
        # Shard after shard, row after row, starting right after the validation prefix: no row skipped or repeated.
        assert ids == list(range(streaming_run.HOLDOUT, streaming_run.HOLDOUT + counted)), skill
    assert len(reference["rows"]) == streaming_run.MAX_STEPS * ACCUMULATION


@pytest.mark.slow
def test_sigkill_mid_round_resumes_at_the_same_row_of_every_source(tmp_path, corpus, reference):
    out, rows = tmp_path / "run", tmp_path / "killed.jsonl"
    # Checkpoint at step 5 (one step into round 2); killed in step 7's first forward, mid-round.
    kill_at = 6 * ACCUMULATION + 1
    command = [sys.executable, str(SCRIPTS / "streaming_run.py"), "kill", str(out), corpus, str(rows), str(kill_at)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    killed = read_rows(rows)
    # The DataLoader reads ahead of training, so more batches than were trained on may be on disk.
    assert len(killed) >= kill_at - 1 and killed == reference["rows"][: len(killed)]
    with open(out / f"checkpoint-{streaming_run.SAVE_STEPS}" / STATE_NAME) as f:
        saved = json.load(f)["stream"]["positions"]
    # The checkpoint holds each source's row at the start of round 2 (offsets into the stream after the prefix).
    round_one = per_source(reference["rows"][: STEPS_PER_ROUND * ACCUMULATION])
    assert [offset for _, offset in saved] == [len(round_one[s]) for s in streaming_run.SKILLS]

    resumed_rows = tmp_path / "resumed.jsonl"
    trainer = streaming_run.build_trainer(str(out), corpus, str(resumed_rows))
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == streaming_run.MAX_STEPS
    resumed = read_rows(resumed_rows)
    # The resumed round is read again from its start (its batches trained before the checkpoint are dropped) ...
    round_start = streaming_run.SAVE_STEPS // STEPS_PER_ROUND * STEPS_PER_ROUND
    assert resumed == reference["rows"][round_start * ACCUMULATION :]
    # ... so every source continues at the row the uninterrupted run reads there.
    after_checkpoint = per_source(resumed[(streaming_run.SAVE_STEPS - round_start) * ACCUMULATION :])
    expected = per_source(reference["rows"][streaming_run.SAVE_STEPS * ACCUMULATION :])
    for skill in streaming_run.SKILLS:
        assert after_checkpoint[skill][:1] == expected[skill][:1] and after_checkpoint[skill] == expected[skill]
    assert trainer.trajectory == reference["trajectory"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    """10x the rows (in 10x the shards of the same size: ~6 MB vs ~60 MB of jsonl) train in the same memory."""
    rows, shards, padding = 2000, 2, 1000
    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    streaming_run.write_corpus(small, rows_per_skill=rows, shards=shards, padding=padding)
    streaming_run.write_corpus(large, rows_per_skill=10 * rows, shards=10 * shards, padding=padding)
    size = sum(f.stat().st_size for f in (tmp_path / "large").rglob("*.jsonl")) / 2**20
    command = [sys.executable, str(SCRIPTS / "streaming_run.py"), "rss", str(tmp_path / "out"), small, large]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    # Reading the large corpus into memory would add at least its size (~60 MB); streaming adds nothing.
    grown = peaks[large] - peaks[small]
    assert grown < 0.1 * size, f"peak RSS {peaks[small]:.0f} MB -> {peaks[large]:.0f} MB for a {size:.0f} MB corpus"


# ----- recipes: data.streaming and hf-skillit train --dry-run --------------------------------------------------------


def streaming_recipe(corpus: str, tmp_path: Path) -> dict:
    tokenizer_dir = tmp_path / "tokenizer"
    streaming_run.build_tokenizer().save_pretrained(tokenizer_dir)
    return {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}, "tokenizer": str(tokenizer_dir)},
        "data": {
            "train_files": {s: f"{corpus}/{s}/*.jsonl" for s in streaming_run.SKILLS},
            "streaming": True,
            "validation_per_skill": streaming_run.HOLDOUT,
        },
        "graph": {"matrix": streaming_run.GRAPH.tolist()},
        "training": {
            **dict(output_dir=str(tmp_path / "run"), mixing="skill_it", eta=1.0, rounds=2, max_steps=4),
            **dict(per_device_train_batch_size=4, max_length=48, report_to="none", disable_tqdm=True),
            **dict(save_strategy="no", remove_unused_columns=False, use_cpu=True),
        },
    }


def test_streaming_recipe_trains_on_the_sources_after_their_prefix(tmp_path, corpus):
    from hf_skillit.recipes import load_recipe, make_trainer

    trainer = make_trainer(load_recipe(None, raw=streaming_recipe(corpus, tmp_path)))
    assert trainer.skills.train_sizes() == dict.fromkeys(streaming_run.SKILLS)  # streams: no length
    for skill in streaming_run.SKILLS:
        assert trainer.skills.validation(skill)["id"][:] == list(range(streaming_run.HOLDOUT))
    trainer.train()
    assert [r["global_step"] for r in trainer.trajectory] == [2, 4]
    assert all(len(r["eval_loss"]) == 3 for r in trainer.trajectory)


def test_streaming_needs_one_source_per_skill(tmp_path, corpus):
    from hf_skillit.recipes import RecipeError, load_recipe

    raw = streaming_recipe(corpus, tmp_path)
    raw["data"] = {"train_file": f"{corpus}/1/part-00000.jsonl", "streaming": True}
    with pytest.raises(RecipeError, match="data.streaming needs train_files"):
        load_recipe(None, raw=raw)


def test_dry_run_prints_sources_first_mixture_and_tasks_without_a_model(tmp_path, monkeypatch, capsys):
    """recipes/redpajama_ood.yaml, on 7 local sources of 2 jsonl shards each and a made-up graph: no model loads
    (its hub id is unreachable here), nothing trains, and p_1 is the static Skill-It mixture softmax(eta * A 1)."""
    import numpy as np
    import yaml

    from hf_skillit import SkillsGraph
    from hf_skillit.cli import main

    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "redpajama_ood.yaml"
    raw = yaml.safe_load(recipe_path.read_text())
    sources, tasks = list(raw["data"]["train_files"]), raw["lm_eval"]["tasks"]
    assert raw["data"]["streaming"] is True
    monkeypatch.chdir(tmp_path)
    for source in sources:
        for shard in range(2):
            path = tmp_path / "data" / "redpajama" / source / f"part-{shard}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"text": f"{source} {shard} {i}"}) + "\n" for i in range(120)))
    # Without a graph yet, the plan says how to learn it.
    assert main(["train", str(recipe_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "not found yet" in out and "hf-skillit learn-graph" in out
    matrix = np.random.default_rng(0).uniform(0, 0.01, (len(sources), len(tasks)))
    SkillsGraph(matrix, sources, tasks).save(raw["graph"]["path"])
    assert main(["train", str(recipe_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for source in sources:
        assert f"{source}/ (2 files), streaming" in out and "first 100 rows of the stream (never trained on)" in out
    logits = raw["training"]["eta"] * matrix.sum(axis=1)
    p_1 = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    printed = {
        line.split()[0]: float(line.split()[1])
        for line in out.splitlines()
        if line.strip().startswith(tuple(sources)) and len(line.split()) == 2
    }
    assert printed == pytest.approx(dict(zip(sources, p_1, strict=True)), abs=5e-5)
    assert ", ".join(tasks) in out
    assert not (tmp_path / raw["training"]["output_dir"]).exists(), "a dry run writes no run"


def counted_rows(path: str):
    """An endless stream of rows of 3 to 9 tokens that appends one line to `path` per row it yields: what the
    stream reads (also the rows an `IterableDataset.skip(n)` reads and drops), in every process that reads it."""
    rng = np.random.default_rng(0)
    with open(path, "a") as log:
        for i in itertools.count():
            log.write(f"{i}\n")
            log.flush()
            yield {"input_ids": rng.integers(4, 40, size=3 + i % 7).tolist()}


def train_with_workers(tmp_path: Path, tokenizer, workers: int) -> tuple[list[dict], int]:
    """20 rounds of 1 step of 4 rows over a counted streaming skill and a map-style one, read by `workers`
    DataLoader workers; the trajectory and the number of rows read from the stream."""
    reads = tmp_path / f"reads-{workers}.txt"
    reads.touch()
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64"))})
    stream = datasets.IterableDataset.from_generator(counted_rows, features, gen_kwargs={"path": str(reads)})
    table = datasets.Dataset.from_dict({"input_ids": [[5 + i % 30] * (2 + i % 11) for i in range(300)]})
    validation = datasets.Dataset.from_dict({"input_ids": [[7, 8, 9, 10][: 2 + i % 3] for i in range(6)]})
    skills = SkillSet({"stream": stream, "table": table}, {"stream": validation, "table": validation})
    args = skillit_config(
        tmp_path / f"run-{workers}",
        mixing="no_graph",
        rounds=20,
        max_steps=20,
        per_device_train_batch_size=4,
        dataloader_num_workers=workers,
    )
    model = make_tiny_model(tiny_config(tokenizer))
    trainer = SkillItTrainer(model=model, args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    return trainer.trajectory, len(reads.read_text().splitlines())


@pytest.mark.slow
def test_workers_read_a_streaming_skill_once_forward(tmp_path, tokenizer):
    """With DataLoader workers, each worker reads the stream forward once over the whole run, dropping the other
    workers' rows as it passes them (issue 22: workers were rebuilt every round, and reopened the stream with
    `skip(offset)` at every round and every gap, so reading grew with the square of the rows read)."""
    alone, read_alone = train_with_workers(tmp_path, tokenizer, workers=0)
    drawn = sum(record["samples"]["stream"] for record in alone)
    assert 20 < drawn < 60 and read_alone == drawn, "one process reads exactly the drawn rows"
    with_workers, read = train_with_workers(tmp_path, tokenizer, workers=2)
    assert with_workers == alone, "the workers must train on the same rows in the same order, round after round"
    assert read <= 2 * drawn, f"2 workers read {read} rows of the stream for {drawn} drawn"
