"""Packing per skill against truncation and chunking, on the local real-text corpus kept as whole documents
(issue 21).

    python benchmarks/packing/compare.py [--docs 40] [--max-length 128] [--tokens 100000] [--seeds 0 1 2]

The four sources of `benchmarks/out_of_domain/text_sources.py` (standard-library source, manual pages, licences,
Debian changelogs) are the skills, each `--docs` whole documents (an even spread over the source, in sorted order),
10 of them held out per skill. A byte-level BPE (2048 tokens) is trained on the training documents. For each mode
(`truncate`: a document's first max_length tokens; `chunk`: every document cut into rows of at most max_length;
`pack`: each skill's documents, EOS after each, in blocks of max_length), a tiny GPT-NeoX trains on the stratified
mixture from the same initial weights until it has trained `--tokens` tokens (or `--max-steps`), and then every
model is scored on the same validation text: the held-out documents packed into blocks of max_length.

Printed per mode (mean ± std over seeds): the training text's tokens that truncation drops, tokens trained per step,
padding (share of the batch positions that hold no trained token), tokens per second of training, the steps to
reach the token budget, and the validation loss at that equal number of tokens. Then the stream: rows/s of the
mixture stream over the four sources read as packed *streaming* skills (jsonl), against the training rate in rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import datasets
import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "out_of_domain"))
from text_sources import (  # noqa: E402
    SOURCES,
    _read,
    changelog_files,
    license_files,
    man_pages,
    roff_to_text,
    stdlib_files,
    train_tokenizer,
)

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet  # noqa: E402
from hf_skillit.evaluation import per_skill_loss  # noqa: E402
from hf_skillit.synthetic import make_tiny_model, tiny_model_config  # noqa: E402

MODES = {
    "truncate": dict(packing=False, long_documents="truncate"),
    "chunk": dict(packing=False, long_documents="chunk"),
    "pack": dict(packing=True),
}
HELD_OUT = 10


class _Meter(SkillItTrainer):
    """Counts trained tokens and batch positions, and stops at the token budget."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.trained += int((inputs["labels"] != -100).sum())
        self.positions += inputs["input_ids"].numel()
        return super().training_step(model, inputs, num_items_in_batch)


class _StopAtTokens(TrainerCallback):
    def __init__(self, trainer: _Meter, budget: int):
        self.trainer, self.budget = trainer, budget

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.trained >= self.budget:
            self.trainer.steps = state.global_step
            control.should_training_stop = True


def corpus(docs: int) -> dict[str, list[str]]:
    """`docs` whole documents of each source: an even spread over its sorted files, only those files read."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = {
        "python": [os.path.join(stdlib, f) for f in stdlib_files(stdlib)[0]],
        "man": man_pages("18"),
        "licenses": license_files(),
        "changelogs": changelog_files(),
    }
    out = {}
    for name in SOURCES:
        chosen = files[name][:: max(1, len(files[name]) // docs)][:docs]
        texts = [roff_to_text(_read(f)) if name == "man" else _read(f) for f in chosen if os.path.isfile(f)]
        out[name] = [t for t in texts if t.strip()]
    return out


def run(mode: str, seed: int, skills: SkillSet, tokenizer, validation: dict, args: argparse.Namespace, work: str):
    config = SkillItConfig(
        output_dir=os.path.join(work, f"{mode}-{seed}"),
        overwrite_output_dir=True,
        mixing="stratified",
        rounds=1,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        evaluate_skills_every_round=False,
        evaluate_skills_before_training=False,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        seed=seed,
        **MODES[mode],
    )
    model = make_tiny_model(
        tiny_model_config(
            tokenizer=tokenizer, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=args.max_length
        ),
        seed=seed,
    )
    trainer = _Meter(model=model, args=config, skills=skills, processing_class=tokenizer)
    trainer.trained = trainer.positions = 0
    trainer.steps = args.max_steps
    trainer.add_callback(_StopAtTokens(trainer, args.tokens))
    start = time.process_time()
    trainer.train()
    seconds = time.process_time() - start
    losses = per_skill_loss(
        trainer.model, validation, collator=trainer.data_collator, batch_size=32, device=torch.device("cpu")
    )
    dropped = sum(c["train"].dropped for c in trainer.skills.token_counts.values())
    total = sum(c["train"].tokens for c in trainer.skills.token_counts.values())
    return {
        "dropped": dropped / total,
        "tokens_per_step": trainer.trained / trainer.steps,
        "padding": 1 - trainer.trained / trainer.positions,
        "tokens_per_s": trainer.trained / seconds,
        "rows_per_s": trainer.steps * args.batch / seconds,
        "steps": trainer.steps,
        "tokens": trainer.trained,
        "loss": statistics.fmean(losses.values()),
    }


def stream_rate(texts: dict[str, list[str]], tokenizer, args: argparse.Namespace, work: str, tokenized: bool) -> float:
    """Rows/s (per CPU second) of the mixture stream over the sources read as packed streaming skills (jsonl of
    raw text, tokenized as read, or of `input_ids`), collated into batches, as the trainer's DataLoader yields them."""
    sources = {}
    for name, docs in texts.items():
        path = os.path.join(work, f"{name}-{tokenized}.jsonl")
        rows = {"input_ids": [tokenizer(d)["input_ids"] + [tokenizer.eos_token_id] for d in docs]}
        datasets.Dataset.from_dict(rows if tokenized else {"text": docs}).to_json(path)
        sources[name] = datasets.load_dataset("json", data_files=path, split="train", streaming=True).repeat(None)
    skills = SkillSet.from_dict(sources, validation=HELD_OUT)
    config = SkillItConfig(
        output_dir=os.path.join(work, "stream"),
        overwrite_output_dir=True,
        mixing="stratified",
        rounds=1,
        max_steps=args.stream_steps,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        packing=True,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    model = make_tiny_model(
        tiny_model_config(
            tokenizer=tokenizer, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=args.max_length
        )
    )
    trainer = SkillItTrainer(model=model, args=config, skills=skills, processing_class=tokenizer)
    loader = trainer.get_train_dataloader()
    start = time.process_time()
    rows = sum(len(batch["input_ids"]) for batch in loader)
    return rows / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=40, help="documents per source")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=100_000, help="token budget of every run")
    parser.add_argument("--max-steps", type=int, default=2000, help="cap when a mode trains few tokens a step")
    parser.add_argument("--stream-steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    texts = corpus(args.docs)
    # The held-out documents come off each source before anything else (SkillSet.from_dict, seed 0).
    skills = SkillSet.from_dict({n: datasets.Dataset.from_dict({"text": t}) for n, t in texts.items()}, HELD_OUT)
    tokenizer = train_tokenizer([t for n in skills.train_skills for t in skills.train(n)["text"]])
    # One validation set for every mode: the held-out documents, EOS after each, in blocks of max_length.
    validation = skills.subset(skills.train_skills).tokenized(tokenizer, max_length=args.max_length, packing=True)
    validation = {n: validation.validation(n) for n in validation.eval_skills}
    docs_tokens = {
        n: sum(len(tokenizer(t)["input_ids"]) for t in skills.train(n)["text"]) for n in skills.train_skills
    }
    print(f"corpus: {args.docs} documents per source, {HELD_OUT} held out; training tokens per source: {docs_tokens}")
    print(f"validation: {sum(len(v) for v in validation.values())} blocks of {args.max_length} tokens")
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for mode in MODES:  # interleaved, so machine load hits every mode alike
                results[mode].append(run(mode, seed, skills, tokenizer, validation, args, work))
                print(mode, seed, results[mode][-1], flush=True)
        rates = {
            kind: stream_rate(texts, tokenizer, args, work, kind == "input_ids") for kind in ("text", "input_ids")
        }

    def cell(values: list[float], fmt: str) -> str:
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:{fmt}} ± {std:{fmt}}"

    print(
        f"\n| mode | text tokens dropped | tokens/step | padding | tokens/s | steps to {args.tokens:,} tokens | "
        "validation loss |"
    )
    print("|---|---|---|---|---|---|---|")
    formats = {"dropped": ".1%", "tokens_per_step": ".0f", "padding": ".1%", "tokens_per_s": ".0f", "steps": ".0f"}
    formats["loss"] = ".3f"
    for mode, runs in results.items():
        cells = [cell([r[key] for r in runs], fmt) for key, fmt in formats.items()]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    training = statistics.fmean(r["rows_per_s"] for r in results["pack"])
    for kind, rate in rates.items():
        print(
            f"stream of packed streaming skills ({kind} jsonl): {rate:,.0f} rows/s per CPU second, "
            f"{rate / training:,.0f}x the training rate ({training:,.1f} rows/s)"
        )


if __name__ == "__main__":
    main()
