"""A SkillItTrainer run over streaming skills (local jsonl shards), for tests/test_streaming.py.

    python streaming_run.py kill OUTPUT_DIR CORPUS_DIR ROWS_FILE N   # SIGKILLs itself in the N-th training forward
    python streaming_run.py rss OUTPUT_DIR CORPUS_DIR... [--map]       # prints {"peak_rss_mb": {corpus: MB}}
    python streaming_run.py write CORPUS_DIR ROWS_PER_SKILL SHARDS PADDING  # writes a corpus (write_corpus)

`write_corpus` writes each skill's rows as several jsonl shards; `build_trainer` streams them with
`datasets.load_dataset("json", ..., streaming=True)`, one source per skill, holding out each source's first rows for
validation. Every training micro-batch's (skill, id) pairs are appended to the rows file at once, so that the rows
trained on before a kill are on disk.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import sys

import datasets
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conftest import RecordingCollator, checkpointed_settings, kill_in_forward, skillit_config, tiny_config  # noqa: E402

from hf_skillit import SkillItTrainer, SkillSet, SkillsGraph  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, make_lego, make_tiny_model  # noqa: E402

SKILLS = ("1", "2", "3")
HOLDOUT = 8
ROUNDS, MAX_STEPS, SAVE_STEPS = 3, 12, 5  # a checkpoint at step 5, one step into round 2 (rounds of 4 steps)
GRAPH = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])


def write_corpus(root: str, rows_per_skill: int, shards: int = 3, padding: int = 0) -> None:
    """`root/<skill>/part-<i>.jsonl`: rows `id` (0, 1, ... within the skill, in shard order), `skill`, `text` (LEGO)
    and, with `padding` > 0, a `blob` of that many characters that nothing reads (to make a corpus big cheaply)."""
    pool = make_lego(100 * len(SKILLS), k=len(SKILLS), seed=0)
    blob = "x" * padding
    for skill in SKILLS:
        texts = [t for t, s in zip(pool["text"], pool["skill"], strict=True) if s == skill]
        os.makedirs(os.path.join(root, skill), exist_ok=True)
        bounds = np.linspace(0, rows_per_skill, shards + 1).astype(int)
        for shard, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            with open(os.path.join(root, skill, f"part-{shard:05d}.jsonl"), "w") as f:
                for i in range(start, stop):
                    row = {"id": int(i), "skill": skill, "text": texts[i % len(texts)]}
                    if padding:
                        row["blob"] = blob
                    f.write(json.dumps(row) + "\n")


def streaming_skills(corpus: str, streaming: bool = True) -> SkillSet:
    """One streaming source per skill; each source's first HOLDOUT rows are its validation rows (`streaming=False`:
    the same files loaded into map-style datasets, HOLDOUT random rows held out; for comparison)."""
    sources = {
        skill: datasets.load_dataset(
            "json",
            data_files=sorted(glob.glob(os.path.join(corpus, skill, "*.jsonl"))),
            split="train",
            streaming=streaming,
        )
        for skill in SKILLS
    }
    return SkillSet.from_dict(sources, validation=HOLDOUT)


def build_trainer(
    output_dir: str, corpus: str, rows_path: str | None = None, streaming: bool = True, **overrides
) -> SkillItTrainer:
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    model = make_tiny_model(tiny_config(tokenizer), seed=0)
    args = dict(
        **checkpointed_settings(ROUNDS, MAX_STEPS, SAVE_STEPS), eta=1.0, remove_unused_columns=rows_path is None
    )
    args.update(overrides)
    collator = None
    if rows_path:  # every training micro-batch's (skill, id) pairs
        collator = RecordingCollator(tokenizer.pad_token_id, rows_path, lambda row: [row["skill"], int(row["id"])])
    return SkillItTrainer(
        model=model,
        args=skillit_config(output_dir, **args),
        skills=streaming_skills(corpus, streaming),
        graph=SkillsGraph(GRAPH, list(SKILLS)),
        data_collator=collator,
        processing_class=tokenizer,
    )


def main() -> None:
    mode, *rest = sys.argv[1:]
    if mode == "kill":
        output_dir, corpus, rows_path, n = rest
        trainer = build_trainer(output_dir, corpus, rows_path)
        kill_in_forward(trainer.model, int(n))
        trainer.train()
    elif mode == "rss":
        streaming = "--map" not in rest
        output_dir, *corpora = [arg for arg in rest if arg != "--map"]
        # One forked child per corpus, after the imports: every child starts from the same memory.
        peaks = {}
        for i, corpus in enumerate(corpora):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                build_trainer(
                    os.path.join(output_dir, str(i)), corpus, streaming=streaming, save_strategy="no"
                ).train()
                # ru_maxrss is in KiB on Linux.
                os.write(write, str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).encode())
                os._exit(0)
            os.close(write)
            with os.fdopen(read) as f:
                peaks[corpus] = float(f.read())
            _, status = os.waitpid(pid, 0)
            if status:
                raise SystemExit(f"the run on {corpus} failed (status {status})")
        print(json.dumps({"peak_rss_mb": peaks}))
    elif mode == "write":
        corpus, rows, shards, padding = rest
        write_corpus(corpus, int(rows), int(shards), int(padding))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
