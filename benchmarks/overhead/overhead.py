"""What Skill-It's data selection costs on top of a plain Trainer, measured side by side in one run.

    python benchmarks/overhead/overhead.py [--steps 300] [--repeats 3] [--baseline-rev REV]
    python benchmarks/overhead/overhead.py --stream-only [--baseline-rev REV]

Prints a table of wall times and ratios (median over repeats, runs interleaved so machine noise hits all
variants alike):
- plain `Trainer` on a pre-mixed, pre-shuffled dataset;
- `SkillItTrainer` with a fixed mixture and no per-round evaluation (the stream's own overhead);
- `SkillItTrainer` with Skill-It and per-round evaluation of every skill.
Targets (issue 3): fixed-mixture ratio <= 1.03; with evaluation <= 1 + eval_forwards/train_forwards + 0.02.
Then the time to draw a round over 1000 skills (target < 1 s), and the mixture stream's own rate (issue 16:
>= 200,000 samples/s on one core): tokenized rows of 32-256 tokens, 3, 100 and 1000 skills, rounds of the
default recipe's size, batches of 32 collated into tensors by the trainer's collator through a DataLoader.
Rates are per CPU second (the process is single-threaded, so this is the rate on one idle core; a shared
machine's wall clock is also printed). `--baseline-rev REV` measures the stream and collator of a git revision
beside the current ones, interleaved. The last line is `stream: <N> samples/s, <R>x training rate`: the slowest
skill count's rate against the plain Trainer's samples per CPU second.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable
from transformers import Trainer, TrainingArguments

import hf_skillit.collator as collator
import hf_skillit.streams as streams
from hf_skillit import LMCollator, SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.streams import MixtureStream, StreamState
from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config

BATCH = 32
VALIDATION = 100  # per skill, as the paper
ROUND_SAMPLES = 8000  # one round of the default recipe (recipes/lego_pretrain.yaml): 1500 steps / 6 rounds x 32
SKILL_COUNTS = (3, 100, 1000)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lego_skillset(tokenizer) -> tuple[SkillSet, datasets.Dataset]:
    data = encode(make_lego(5 * (2000 + VALIDATION), k=5, seed=0), tokenizer)
    skills = SkillSet.from_column(data, column="skill", validation=VALIDATION, order=["1", "2", "3", "4", "5"])
    mixed = datasets.concatenate_datasets([skills.train(s) for s in skills.train_skills]).shuffle(seed=0)
    return skills, mixed.select_columns(["input_ids", "labels"])


def common_args(output_dir: str, steps: int) -> dict:
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=10**6,
        seed=0,
    )


def time_plain(tokenizer, mixed, steps: int, cpu: bool = False) -> float:
    """Seconds of `trainer.train()` for a plain Trainer on pre-mixed data: wall clock, or with `cpu` the
    process's CPU time (one torch thread: the time on an idle core)."""
    with tempfile.TemporaryDirectory() as out:
        model = make_tiny_model(tiny_model_config(tokenizer=tokenizer), seed=0)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common_args(out, steps)),
            train_dataset=mixed,
            data_collator=LMCollator(tokenizer.pad_token_id),
        )
        clock = time.process_time if cpu else time.perf_counter
        start = clock()
        trainer.train()
        return clock() - start


def time_skillit(tokenizer, skills, steps: int, rounds: int, evaluate: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        model = make_tiny_model(tiny_model_config(tokenizer=tokenizer), seed=0)
        names = list(skills.train_skills)
        extra = (
            dict(mixing="skill_it", eta=0.5, window=3)
            if evaluate
            else dict(mixing="fixed", fixed_weights={s: 1.0 for s in names}, evaluate_skills_every_round=False)
        )
        args = SkillItConfig(**common_args(out, steps), rounds=rounds, **extra)
        graph = SkillsGraph(np.eye(5) + np.eye(5, k=1) * 0.5, names)
        trainer = SkillItTrainer(model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def token_skills(num_skills: int, total_rows: int = 60_000, seed: int = 0) -> list[datasets.Dataset]:
    """Tokenized skills of rows 32-256 tokens long (`input_ids` int32, `labels` int64 with a masked prompt),
    built straight from Arrow arrays; `total_rows` split evenly over the skills."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(num_skills):
        rows = max(1, total_rows // num_skills)
        lengths = rng.integers(32, 257, rows)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        ids = rng.integers(0, 50_000, int(lengths.sum())).astype(np.int32)
        labels = ids.astype(np.int64)
        labels[rng.random(len(labels)) < 0.5] = -100
        table = pa.table(
            {
                "input_ids": pa.ListArray.from_arrays(offsets, pa.array(ids)),
                "labels": pa.ListArray.from_arrays(offsets, pa.array(labels)),
            }
        )
        sets.append(datasets.Dataset(InMemoryTable(table)))
    return sets


def stream_rate(
    modules, sets: list[datasets.Dataset], rounds: int = 3, per_round: int = ROUND_SAMPLES
) -> tuple[float, float]:
    """Samples per CPU second and per wall second of the trainer's data path alone: each round's mixture built
    (rebuild included), rows fetched and collated into tensor batches by the trainer's collator, through a
    `DataLoader` (no workers). Rounds 2 to `rounds + 1` are timed; the first round, which also pays the stream's
    one-off setup, is not.

    Per CPU second is the rate on one idle core (the process is single-threaded), which a shared machine's wall
    clock does not show."""
    streams_module, collator_module = modules
    k = len(sets)
    state = streams_module.StreamState.fresh(k)
    p = np.random.default_rng(k).dirichlet(np.ones(k))
    stream = streams_module.MixtureStream(sets, lambda r: p, state, 0, per_round, BATCH)
    collate = collator_module.SkillTaggingCollator(collator_module.LMCollator(pad_token_id=0))
    loader = torch.utils.data.DataLoader(stream, batch_size=BATCH, collate_fn=collate)
    count = 0
    for r in range(rounds + 1):
        if r == 1:
            count, start, cpu = 0, time.perf_counter(), time.process_time()
        stream.set_epoch(r)
        counts = torch.zeros(k, dtype=torch.long)
        for batch in loader:
            counts += torch.bincount(batch[streams_module.SKILL_KEY], minlength=k)
        state.advance(counts.tolist(), stream.sizes)
        count += int(counts.sum())
    return count / (time.process_time() - cpu), count / (time.perf_counter() - start)


def baseline_modules(rev: str):
    """streams.py and collator.py as of git revision `rev`, imported as a separate package (for before/after)."""
    root = tempfile.mkdtemp()
    package = os.path.join(root, "hf_skillit_baseline")
    os.makedirs(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in ("streams", "collator"):
        source = subprocess.run(
            ["git", "show", f"{rev}:hf_skillit/{name}.py"], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout
        with open(os.path.join(package, f"{name}.py"), "w") as f:
            f.write(source)
    sys.path.insert(0, root)
    return importlib.import_module("hf_skillit_baseline.streams"), importlib.import_module(
        "hf_skillit_baseline.collator"
    )


def stream_table(baseline_rev: str | None, repeats: int) -> float:
    """Print the stream rate for 3, 100 and 1000 skills (median of `repeats`, per CPU second and per wall
    second), interleaved with the baseline revision's if given; return the slowest configuration's CPU rate."""
    variants = {"now": (streams, collator)}
    if baseline_rev:
        variants[baseline_rev] = baseline_modules(baseline_rev)
    worst = math.inf
    header = "".join(f"{f'{name} cpu':>14}{f'{name} wall':>14}" for name in variants)
    print(f"{'stream samples/s, rows 32-256 tokens':<38}{header}")
    for k in SKILL_COUNTS:
        sets = token_skills(k)
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, modules in variants.items():
                rates[name].append(stream_rate(modules, sets))
        cells = ""
        for name, values in rates.items():
            cpu, wall = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
            cells += f"{cpu:>14.0f}{wall:>14.0f}"
            if name == "now":
                worst = min(worst, cpu)
        print(f"{f'{k} skills, batch {BATCH}':<38}{cells}")
    return worst


def rebuild_seconds(num_skills: int = 1000) -> float:
    """Seconds to draw one round of 4096 samples over `num_skills` skills (the stream's `round_draws`)."""
    sets = [datasets.Dataset.from_dict({"x": list(range(50))}) for _ in range(num_skills)]
    stream = MixtureStream(
        sets, lambda r: np.full(num_skills, 1 / num_skills), StreamState.fresh(num_skills), 0, 4096, 32
    )
    start = time.perf_counter()
    streams.round_draws(stream.sizes, np.full(num_skills, 1 / num_skills), stream.state, 0, 0, 4096)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stream-only", action="store_true", help="the stream rate and the plain training rate only")
    parser.add_argument("--baseline-rev", help="also measure the stream of this git revision, interleaved")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    datasets.disable_progress_bars()

    tokenizer = build_tokenizer()
    skills, mixed = lego_skillset(tokenizer)
    if opts.stream_only:
        steps = min(opts.steps, 100)
        time_plain(tokenizer, mixed, 10)  # warm-up
        training_rate = steps * BATCH / statistics.median(time_plain(tokenizer, mixed, steps, True) for _ in range(3))
        print(
            f"training: {training_rate:.0f} samples per CPU second (plain Trainer, tiny GPT-NeoX, LEGO, {steps} steps)"
        )
        rate = stream_table(opts.baseline_rev, opts.repeats)
        print(f"stream: {rate:.0f} samples/s, {rate / training_rate:.0f}x training rate")
        return

    times: dict[str, list[float]] = {"plain": [], "fixed": [], "eval": []}
    for _ in range(opts.repeats):
        times["plain"].append(time_plain(tokenizer, mixed, opts.steps))
        times["fixed"].append(time_skillit(tokenizer, skills, opts.steps, opts.rounds, evaluate=False))
        times["eval"].append(time_skillit(tokenizer, skills, opts.steps, opts.rounds, evaluate=True))
    median = {k: statistics.median(v) for k, v in times.items()}
    train_samples = opts.steps * BATCH
    eval_samples = opts.rounds * 5 * VALIDATION
    bound = 1 + eval_samples / train_samples + 0.02
    training_rate = train_samples / median["plain"]
    rebuild = rebuild_seconds()

    print(
        f"tiny GPT-NeoX, LEGO k=5, batch {BATCH}, {opts.steps} steps, {opts.rounds} rounds, {opts.threads} thread(s)"
    )
    print(f"{'variant':<42}{'median s':>10}{'ratio':>8}{'target':>10}")
    print(f"{'plain Trainer, pre-mixed data':<42}{median['plain']:>10.2f}{1:>8.3f}{'':>10}")
    print(
        f"{'SkillItTrainer, fixed mixture, no eval':<42}{median['fixed']:>10.2f}"
        f"{median['fixed'] / median['plain']:>8.3f}{'<= 1.03':>10}"
    )
    print(
        f"{'SkillItTrainer, Skill-It + per-round eval':<42}{median['eval']:>10.2f}"
        f"{median['eval'] / median['plain']:>8.3f}{f'<= {bound:.3f}':>10}"
    )
    print(f"eval forwards / train forwards = {eval_samples} / {train_samples} samples")
    print(f"{'training (samples/s, plain Trainer)':<42}{training_rate:>10.0f}")
    print(f"{'round rebuild, 1000 skills (s)':<42}{rebuild:>10.3f}{'':>8}{'< 1':>10}")
    print("raw times:", {k: [round(t, 2) for t in v] for k, v in times.items()})
    cpu_rate = opts.steps * BATCH / time_plain(tokenizer, mixed, opts.steps, cpu=True)
    print(f"{'training (samples per CPU second)':<42}{cpu_rate:>10.0f}")
    rate = stream_table(opts.baseline_rev, opts.repeats)
    print(f"stream: {rate:.0f} samples/s, {rate / cpu_rate:.0f}x training rate")


if __name__ == "__main__":
    main()
