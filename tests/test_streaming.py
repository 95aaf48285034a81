"""Streaming skills at corpus scale: local jsonl shards read through `load_dataset(..., streaming=True)`, one source
per skill, with each source's first rows held out for validation (tests/scripts/streaming_run.py builds the run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
