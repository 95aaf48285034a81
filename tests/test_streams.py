"""The per-round mixture stream: positions, epochs, determinism and the interleave's draws."""

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable

from hf_skillit import streams
from hf_skillit.streams import SKILL_KEY, MixtureStream, StreamState, next_rows


def draw_bound(num_samples: int, p: float) -> int:
    """A count that Binomial(num_samples, p) exceeds with negligible probability (retried if it does)."""
    if p <= 0:
        return 0
    mean = num_samples * p
    return min(num_samples, int(np.ceil(mean + 8 * np.sqrt(mean * (1 - p) + 1) + 8)))


def interleave_reference(sizes, probabilities, state, seed, round_index, num_samples, bound=draw_bound):
    """The `num_samples` (skill, row) pairs of one round, mixed by `datasets.interleave_datasets`: the definition
    that `streams.round_draws` computes directly (it was the package's implementation before).

    Each source holds the next rows of one skill's stream, `bound(num_samples, p)` of them, enough for the round with
    overwhelming probability. Which skill is drawn at each position depends on the interleave's seeded RNG alone, not
    on the sources' lengths, so the rare retry with longer sources extends the sequence without changing it.
    """
    probabilities = [float(p) for p in probabilities]
    mixing_seed = int(np.random.default_rng([seed, round_index]).integers(2**31))
    scale = 1
    while True:
        sources = []
        for skill, (size, position, p) in enumerate(zip(sizes, state.positions, probabilities, strict=True)):
            rows = next_rows(seed, skill, size, position, min(num_samples, bound(num_samples, p) * scale))
            table = pa.table({"skill": np.full(len(rows), skill, dtype=np.int64), "row": rows})
            # An explicit fingerprint skips hashing the table.
            fingerprint = f"skillit-{seed}-{round_index}-{skill}-{scale}"
            sources.append(datasets.Dataset(InMemoryTable(table), fingerprint=fingerprint))
        mixed = datasets.interleave_datasets(
            sources, probabilities=probabilities, seed=mixing_seed, stopping_strategy="first_exhausted"
        )
        if len(mixed) >= num_samples:
            return mixed.select(range(num_samples))
        scale *= 2


def id_sets(sizes):
    return [datasets.Dataset.from_dict({"id": [f"{s}-{i}" for i in range(n)]}) for s, n in enumerate(sizes)]


def run_rounds(sizes, schedule, samples_per_round, seed=0, batch_size=4):
    """Iterate a MixtureStream round by round the way the trainer does, advancing positions by the counts."""
    state = StreamState.fresh(len(sizes))
    stream = MixtureStream(id_sets(sizes), lambda r: schedule[r], state, seed, samples_per_round, batch_size)
    rounds = []
    for r in range(len(schedule)):
        stream.set_epoch(r)
        rows = list(stream)
        counts = np.bincount([row[SKILL_KEY] for row in rows], minlength=len(sizes))
        state.advance(counts, stream.sizes)
        rounds.append(rows)
    return rounds, state


def test_no_row_repeats_before_its_skill_is_used_up():
    sizes = [7, 13, 50]
    schedule = [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]]
    rounds, state = run_rounds(sizes, schedule, samples_per_round=60)
    seen = {s: [row["id"] for rows in rounds for row in rows if row[SKILL_KEY] == s] for s in range(3)}
    for s, ids in seen.items():
        assert len(ids) > sizes[s], "each skill must wrap into a new epoch in this test"
        for start in range(0, len(ids), sizes[s]):
            epoch = ids[start : start + sizes[s]]
            assert len(set(epoch)) == len(epoch), f"skill {s} repeated a row inside one epoch"
            if len(epoch) == sizes[s]:
                assert set(epoch) == {f"{s}-{i}" for i in range(sizes[s])}
        # The saved position is where the next round continues: epochs done and offset into the next.
        assert (state.positions[s].epoch, state.positions[s].offset) == divmod(len(ids), sizes[s])


def test_rounds_are_exactly_sized_and_deterministic():
    schedule = [[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]
    first, _ = run_rounds([20, 20, 20], schedule, samples_per_round=40, seed=3)
    again, _ = run_rounds([20, 20, 20], schedule, samples_per_round=40, seed=3)
    other, _ = run_rounds([20, 20, 20], schedule, samples_per_round=40, seed=4)
    assert [len(rows) for rows in first] == [40, 40]
    assert all(row[SKILL_KEY] != 2 for row in first[0]), "a skill with p = 0 must never be drawn"
    assert [r["id"] for rows in first for r in rows] == [r["id"] for rows in again for r in rows]
    assert [r["id"] for rows in first for r in rows] != [r["id"] for rows in other for r in rows]


def test_source_lengths_do_not_change_the_draws():
    """The reference's rare retry with longer sources (when a skill is drawn more than its bound) extends, not
    changes, so the reference is the interleave over sources that never run out."""
    state = StreamState.fresh(3)
    p = [0.2, 0.3, 0.5]
    expected = interleave_reference([100, 100, 100], p, state, seed=0, round_index=1, num_samples=200)
    retried = interleave_reference(
        [100, 100, 100], p, state, seed=0, round_index=1, num_samples=200, bound=lambda n, p: 1 if p > 0 else 0
    )
    assert retried["skill"] == expected["skill"] and retried["row"] == expected["row"]


def test_counts_follow_probabilities():
    p = np.array([0.6, 0.3, 0.1])
    skills, _ = streams.round_draws([10_000] * 3, p, StreamState.fresh(3), seed=0, round_index=0, num_samples=5000)
    counts = np.bincount(skills, minlength=3)
    chi2 = (((counts - 5000 * p) ** 2) / (5000 * p)).sum()
    assert chi2 < 13.82  # chi-square, 2 degrees of freedom, p-value 0.001


def test_dataloader_workers_keep_the_order():
    sets = id_sets([50, 50])
    schedule = [[0.5, 0.5]]

    def ids(workers):
        stream = MixtureStream(sets, lambda r: schedule[r], StreamState.fresh(2), 0, 48, batch_size=4)
        loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=workers, collate_fn=list)
        return [row["id"] for batch in loader for row in batch]

    single = ids(0)
    assert len(single) == 48 and ids(2) == single


def test_streaming_skills_continue_across_rounds():
    streaming = datasets.Dataset.from_dict({"id": [f"s-{i}" for i in range(200)]}).to_iterable_dataset()
    sets = [streaming, datasets.Dataset.from_dict({"id": [f"m-{i}" for i in range(200)]})]
    state = StreamState.fresh(2)
    stream = MixtureStream(sets, lambda r: [0.5, 0.5], state, 0, 40, batch_size=4)
    seen = []
    for r in range(3):
        stream.set_epoch(r)
        rows = list(stream)
        state.advance(np.bincount([row[SKILL_KEY] for row in rows], minlength=2), stream.sizes)
        seen += [row["id"] for row in rows if row[SKILL_KEY] == 0]
    assert seen == [f"s-{i}" for i in range(len(seen))], "a streaming skill is read in its own order, no repeats"


def test_round_draws_equal_the_interleave():
    """The stream's direct computation of a round equals `datasets.interleave_datasets` on the skills' next rows,
    with epoch wraps, zero probabilities, streaming skills and the retry with longer sources."""
    rng = np.random.default_rng(1)
    for case in range(30):
        k = int(rng.integers(1, 7))
        sizes = [None if rng.random() < 0.2 else int(rng.integers(1, 40)) for _ in range(k)]
        p = rng.dirichlet(np.ones(k)) * (rng.random(k) > 0.3)
        p = p / p.sum() if p.sum() > 0 else np.eye(k)[0]
        state = StreamState(
            [streams.SkillPosition(int(rng.integers(0, 3)), int(rng.integers(0, s or 99))) for s in sizes]
        )
        n = int(rng.integers(1, 2500))
        expected = interleave_reference(sizes, p, state, seed=5, round_index=case, num_samples=n)
        skills, rows = streams.round_draws(sizes, p, state, seed=5, round_index=case, num_samples=n)
        assert skills.tolist() == expected["skill"] and rows.tolist() == expected["row"], f"case {case}"


def test_rows_come_from_arrow_buffers_with_every_column():
    """Token columns are views of the right rows (through indices mappings and across Arrow chunks); a skill
    without a column yields rows without that key; other columns come as Python values."""
    chunked = datasets.concatenate_datasets(
        [
            datasets.Dataset.from_dict(
                {"input_ids": [[i] * (i % 4 + 1) for i in range(j, j + 5)], "id": list(range(j, j + 5))}
            )
            for j in (0, 5)
        ]
    ).shuffle(seed=0)
    labelled = datasets.Dataset.from_dict(
        {"input_ids": [[100 + i, 7] for i in range(6)], "labels": [[-100, 7]] * 6, "id": list(range(100, 106))}
    ).select([5, 3, 1])
    stream = MixtureStream([chunked, labelled], lambda r: [0.5, 0.5], StreamState.fresh(2), 0, 40, batch_size=4)
    for row in stream:
        source = chunked if row[SKILL_KEY] == 0 else labelled
        match = [x for x in source if x["id"] == row["id"]]
        assert len(match) == 1
        assert isinstance(row["input_ids"], np.ndarray) and row["input_ids"].tolist() == match[0]["input_ids"]
        assert ("labels" in row) == (row[SKILL_KEY] == 1)
        if "labels" in row:
            assert row["labels"].tolist() == [-100, 7]


def test_formatted_and_transformed_skills_are_read_through_getitem():
    """A skill's format or transform applies to its rows, as when rows are read with `Dataset.__getitem__`."""
    plain = datasets.Dataset.from_dict({"input_ids": [[i, i] for i in range(8)]})
    tensors = plain.with_format("torch")
    shouted = datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(8)]}).with_transform(
        lambda batch: {"text": [t.upper() for t in batch["text"]]}
    )
    stream = MixtureStream([plain, tensors, shouted], lambda r: [0.3, 0.3, 0.4], StreamState.fresh(3), 0, 30, 4)
    rows = list(stream)
    assert {row[SKILL_KEY] for row in rows} == {0, 1, 2}
    for row in rows:
        if row[SKILL_KEY] == 0:
            assert isinstance(row["input_ids"], np.ndarray)
        elif row[SKILL_KEY] == 1:
            assert isinstance(row["input_ids"], torch.Tensor)
        else:
            assert row["text"].startswith("ROW ")


def test_rows_of_a_contiguous_selection_across_chunks():
    """A contiguous `select` slices the Arrow table (chunks with offsets, no indices mapping)."""
    parts = [
        datasets.Dataset.from_dict(
            {"input_ids": [[i] * (i % 5 + 1) for i in range(j, j + 10)], "id": list(range(j, j + 10))}
        )
        for j in (0, 10, 20)
    ]
    sliced = datasets.concatenate_datasets(parts).select(range(7, 23))
    stream = MixtureStream([sliced], lambda r: [1.0], StreamState.fresh(1), 0, 32, batch_size=4)
    rows = list(stream)
    assert sorted({row["id"] for row in rows}) == list(range(7, 23))
    assert all(row["input_ids"].tolist() == [row["id"]] * (row["id"] % 5 + 1) for row in rows)
