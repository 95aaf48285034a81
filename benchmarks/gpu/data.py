"""The GPU comparison's data: balanced and imbalanced training pools and held-out validation rows per task and seed,
encoded answer-only and saved to disk, then read back as a `SkillSet`."""

from __future__ import annotations

from pathlib import Path

from benchmarks.gpu.settings import TASKS


def prepare_data(task: str, tokenizer, pool: int, seed: int, work: Path, validation_per_skill: int) -> Path:
    """Balanced and imbalanced (random baseline) training pools and balanced validation rows, encoded answer-only,
    saved under `work/data/<task>_seed<seed>`; validation rows are in neither pool."""
    from hf_skillit.synthetic import encode, make_addition, make_lego

    folder = work / "data" / f"{task}_seed{seed}"
    if (folder / "done").exists():
        return folder
    spec = TASKS[task]
    k = len(spec["skills"])

    def generate(n: int, generator_seed: int, proportions):
        if task == "lego":
            return make_lego(n, k=k, proportions=proportions, seed=generator_seed)
        return make_addition(n, digits=k, proportions=proportions, seed=generator_seed)

    validation = generate(validation_per_skill * k, 1000 * seed + 1, None)
    held_out = set(validation["text"])
    encode(validation, tokenizer).save_to_disk(str(folder / "validation"))
    for name, proportions, generator_seed in (("balanced", None, 2), ("imbalanced", spec["random"], 3)):
        rows = generate(pool, 1000 * seed + generator_seed, proportions)
        rows = rows.filter(lambda b: [t not in held_out for t in b["text"]], batched=True)
        encode(rows, tokenizer).save_to_disk(str(folder / name))
    (folder / "done").write_text("ok")
    return folder


def _prepare_data_worker(task: str, model_dir: str, pool: int, seed: int, work: str, validation_per_skill: int) -> str:
    """`prepare_data` in a worker process (one per task and seed: encoding is Python-bound)."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return str(prepare_data(task, tokenizer, pool, seed, Path(work), validation_per_skill))


def _skillset(data: Path, pool: str, skills: list[str]):
    import datasets

    from hf_skillit import SkillSet

    validation = datasets.load_from_disk(str(data / "validation"))
    train = datasets.load_from_disk(str(data / pool))
    return SkillSet.from_column(train, "skill", validation=validation, order=skills), validation
