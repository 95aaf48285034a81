"""Streaming skills read by DataLoader workers: the training rate over 20 rounds with 0, 1 and 2 workers.

`SkillItTrainer` trains a tiny model (so that reading weighs) on three streaming skills: local jsonl shards read with
`datasets.load_dataset("json", ..., streaming=True)` and tokenized on the fly by the trainer, as a user's corpus
would be. Each configuration runs in a fresh process; a callback times every round. If reading grew with the rows
read so far (issue 22: workers rebuilt every round reopened each stream with `skip(offset)`, at every round and every
gap between their batches), the last rounds would be slower than the first; with linear reading they run at the
same rate.

    python benchmarks/overhead/stream_workers.py [--rounds 20] [--steps-per-round 5] [--batch 32] [--workers 0 1 2]
        [--out FILE]

Prints a table (samples per second over the first and the last quarter of the rounds, and overall); with `--out`,
each configuration's result is appended to FILE as a JSON line as it finishes, and configurations already in FILE
are not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SKILLS = ("1", "2", "3")
HOLDOUT = 8


def write_corpus(root: str, rows_per_skill: int, shards: int = 4) -> None:
    """`root/<skill>/part-<i>.jsonl`: LEGO rows (k = 3) of one skill each."""
    from hf_skillit.synthetic import make_lego

    pool = make_lego(600, k=len(SKILLS), seed=0)
    for skill in SKILLS:
        texts = [t for t, s in zip(pool["text"], pool["skill"], strict=True) if s == skill]
        os.makedirs(os.path.join(root, skill), exist_ok=True)
        per_shard = -(-rows_per_skill // shards)
        for shard in range(shards):
            with open(os.path.join(root, skill, f"part-{shard:05d}.jsonl"), "w") as f:
                for i in range(shard * per_shard, min(rows_per_skill, (shard + 1) * per_shard)):
                    f.write(json.dumps({"text": texts[i % len(texts)]}) + "\n")


def measure(workers: int, rounds: int, steps_per_round: int, batch: int) -> dict:
    """One run with `workers` DataLoader workers: the seconds each round took."""
    import datasets
    import torch
    from transformers import TrainerCallback

    from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet
    from hf_skillit.synthetic import build_tokenizer, make_tiny_model, tiny_model_config

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    samples = rounds * steps_per_round * batch
    with tempfile.TemporaryDirectory() as root:
        write_corpus(os.path.join(root, "corpus"), rows_per_skill=samples + HOLDOUT + 1)
        sources = {
            skill: datasets.load_dataset(
                "json",
                data_files=sorted(os.listdir(os.path.join(root, "corpus", skill))),
                streaming=True,
                data_dir=os.path.join(root, "corpus", skill),
                split="train",
            )
            for skill in SKILLS
        }
        skills = SkillSet.from_dict(sources, validation=HOLDOUT)
        tokenizer = build_tokenizer()
        model = make_tiny_model(
            tiny_model_config(tokenizer=tokenizer, hidden_size=16, num_layers=1, num_heads=2), seed=0
        )
        args = SkillItConfig(
            output_dir=os.path.join(root, "run"),
            mixing="no_graph",
            rounds=rounds,
            max_steps=rounds * steps_per_round,
            per_device_train_batch_size=batch,
            dataloader_num_workers=workers,
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            logging_steps=10**6,
        )
        times: list[float] = []

        class RoundClock(TrainerCallback):
            def on_train_begin(self, *a, **k):
                times.append(time.perf_counter())

            def on_step_end(self, _args, state, *a, **k):
                if state.global_step % steps_per_round == 0:
                    times.append(time.perf_counter())

        trainer = SkillItTrainer(model=model, args=args, skills=skills, processing_class=tokenizer)
        # After the trainer's own round-end callback, so that a round's time includes its evaluation and update.
        trainer.add_callback(RoundClock())
        trainer.train()
    return {"workers": workers, "round_s": [b - a for a, b in zip(times, times[1:], strict=False)]}


def row(result: dict, batch: int, steps_per_round: int) -> str:
    per_round = batch * steps_per_round
    seconds = result["round_s"]
    quarter = max(1, len(seconds) // 4)
    rate = lambda part: per_round * len(part) / sum(part)  # noqa: E731
    return (
        f"| {result['workers']} | {sum(seconds):.1f} | {rate(seconds[:quarter]):.0f} | {rate(seconds[-quarter:]):.0f} "
        f"| {rate(seconds):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", help="JSON lines file: results are appended, finished configurations skipped")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # run one configuration, print its JSON
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.rounds, args.steps_per_round, args.batch)))
        return
    done = {}
    if args.out and os.path.exists(args.out):
        with open(args.out) as f:
            done = {r["workers"]: r for r in map(json.loads, f) if r.get("settings") == vars_key(args)}
    results = []
    for workers in args.workers:
        if workers not in done:
            command = [sys.executable, __file__, "--one", str(workers), "--rounds", str(args.rounds)]
            command += ["--steps-per-round", str(args.steps_per_round), "--batch", str(args.batch)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            done[workers] = {**json.loads(output.strip().splitlines()[-1]), "settings": vars_key(args)}
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(done[workers]) + "\n")
        results.append(done[workers])
    quarter = max(1, args.rounds // 4)
    print(f"{args.rounds} rounds of {args.steps_per_round} steps of {args.batch} rows (samples per second)")
    print(f"| workers | seconds | rounds 1-{quarter} | last {quarter} rounds | overall |")
    print("|---|---|---|---|---|")
    for result in results:
        print(row(result, args.batch, args.steps_per_round))


def vars_key(args: argparse.Namespace) -> list[int]:
    return [args.rounds, args.steps_per_round, args.batch]


if __name__ == "__main__":
    main()
