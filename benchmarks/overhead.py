"""What Skill-It's data selection costs on top of a plain Trainer, measured side by side in one run.

    python benchmarks/overhead.py [--steps 300] [--repeats 3]

Prints a table of wall times and ratios (median over repeats, runs interleaved so machine noise hits all
variants alike):
- plain `Trainer` on a pre-mixed, pre-shuffled dataset;
- `SkillItTrainer` with a fixed mixture and no per-round evaluation (the stream's own overhead);
- `SkillItTrainer` with Skill-It and per-round evaluation of every skill.
Targets (issue 3): fixed-mixture ratio <= 1.03; with evaluation <= 1 + eval_forwards/train_forwards + 0.02.
Then the mixture stream's own rate (samples/s, no model) against the training rate (target >= 100x), and
the time to rebuild a round over 1000 skills (target < 1 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import datasets
import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from hf_skillit import LMCollator, SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.streams import MixtureStream, StreamState
from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config

BATCH = 32
VALIDATION = 100  # per skill, as the paper


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


def time_plain(tokenizer, mixed, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        model = make_tiny_model(tiny_model_config(tokenizer=tokenizer), seed=0)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common_args(out, steps)),
            train_dataset=mixed,
            data_collator=LMCollator(tokenizer.pad_token_id),
        )
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


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


def stream_rate(skills, samples: int) -> float:
    sets = [skills.train(s).select_columns(["input_ids", "labels"]) for s in skills.train_skills]
    stream = MixtureStream(sets, lambda r: np.full(5, 0.2), StreamState.fresh(5), 0, samples, BATCH)
    start = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / (time.perf_counter() - start)


def rebuild_seconds(num_skills: int = 1000) -> float:
    sets = [datasets.Dataset.from_dict({"x": list(range(50))}) for _ in range(num_skills)]
    stream = MixtureStream(
        sets, lambda r: np.full(num_skills, 1 / num_skills), StreamState.fresh(num_skills), 0, 4096, 32
    )
    start = time.perf_counter()
    stream.index_stream()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    datasets.disable_progress_bars()

    tokenizer = build_tokenizer()
    skills, mixed = lego_skillset(tokenizer)
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
    rate = stream_rate(skills, samples=20_000)
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
    print(f"{'mixture stream alone (samples/s)':<42}{rate:>10.0f}{rate / training_rate:>7.0f}x{'>= 100x':>10}")
    print(f"{'training (samples/s, plain Trainer)':<42}{training_rate:>10.0f}")
    print(f"{'round rebuild, 1000 skills (s)':<42}{rebuild:>10.3f}{'':>8}{'< 1':>10}")
    print("raw times:", {k: [round(t, 2) for t in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
