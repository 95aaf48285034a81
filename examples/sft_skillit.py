# Copyright 2026 The hf_skillit authors. Licensed under the Apache License, Version 2.0.
"""Supervised fine-tuning with TRL's `SFTTrainer`, the training rows chosen online by Skill-It.

The script is TRL's `trl/scripts/sft.py` with the dataset replaced by skills: `--skills_dir` holds one folder (or
one file) of jsonl/parquet files per skill, in TRL's formats (a `text` column, `prompt`/`completion` columns, or
`messages`). Each skill's first `--validation_per_skill` rows are held out for the per-round validation loss
(or give `--validation_dir` with the same layout). `--streaming` reads the skills with
`load_dataset(..., streaming=True)`, for corpora that do not fit in memory.

```bash
pip install 'hf-skillit[trl]'
python examples/sft_skillit.py \
    --model_name_or_path Qwen/Qwen2.5-0.5B \
    --skills_dir data/skills \
    --graph_path graph.json \
    --mixing skill_it --eta 0.5 --rounds 6 \
    --max_steps 600 --per_device_train_batch_size 8 --learning_rate 2e-5 \
    --output_dir runs/qwen-sft-skillit

# LoRA, through TRL's ModelConfig flags:
python examples/sft_skillit.py ... --use_peft --lora_r 16 --lora_alpha 32

# all settings from a YAML file (TRL's --config):
python examples/sft_skillit.py --config sft_skillit.yaml
```

Without `--graph_path`, use a mixture that needs no graph (`--mixing stratified`, `random`, `no_graph`) or learn
one first (`hf-skillit learn-graph`, docs/graph_learning.md).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import datasets
from trl import ModelConfig, TrlParser, get_peft_config

from hf_skillit import SkillSet
from hf_skillit.integrations.trl import SkillItSFTConfig, SkillItSFTTrainer

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class SkillArguments:
    """Where the skills' data is (Skill-It's and TRL's settings are `SkillItSFTConfig` flags)."""

    skills_dir: str = field(metadata={"help": "One folder (or file) of jsonl/parquet files per skill: its name."})
    validation_dir: str | None = field(
        default=None, metadata={"help": "The skills' validation rows, same layout. Default: held out of skills_dir."}
    )
    validation_per_skill: int = field(
        default=100, metadata={"help": "Rows held out of each skill for validation when no validation_dir is given."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the training files instead of loading them."})


def load_skills_dir(root: str, streaming: bool) -> dict[str, datasets.Dataset | datasets.IterableDataset]:
    """skill name -> its rows, one entry per folder or file of `root`, in sorted order."""
    skills = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        files = sorted(glob.glob(os.path.join(path, "*"))) if os.path.isdir(path) else [path]
        files = [f for f in files if os.path.splitext(f)[1] in _BUILDERS]
        if not files:
            continue
        name = os.path.splitext(entry)[0] if os.path.isfile(path) else entry
        builder = _BUILDERS[os.path.splitext(files[0])[1]]
        skills[name] = datasets.load_dataset(builder, data_files=files, split="train", streaming=streaming)
    if not skills:
        raise ValueError(
            f"{root} holds no skill: expected one folder or file of {'/'.join(_BUILDERS)} files per skill"
        )
    return skills


def main(skill_args: SkillArguments, training_args: SkillItSFTConfig, model_args: ModelConfig) -> SkillItSFTTrainer:
    train = load_skills_dir(skill_args.skills_dir, skill_args.streaming)
    if skill_args.validation_dir is not None:
        skills = SkillSet(train, load_skills_dir(skill_args.validation_dir, streaming=False))
    else:
        # A stream's first rows are held out and never trained on; a loaded skill holds out random rows.
        skills = SkillSet.from_dict(train, skill_args.validation_per_skill, seed=training_args.seed)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    trainer = SkillItSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        skills=skills,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    for record in trainer.trajectory:
        mixture = " ".join(f"{s}={w:.2f}" for s, w in record["p"].items())
        trainer.accelerator.print(f"round {record['round']}: p {mixture}")
    return trainer


if __name__ == "__main__":
    parser = TrlParser((SkillArguments, SkillItSFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
