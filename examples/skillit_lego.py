# Copyright 2026 The hf_skillit authors. Licensed under the Apache License, Version 2.0.
"""Skill-It on the LEGO synthetic task with a tiny model, every setting from the command line.

`SkillItConfig` is a `transformers.TrainingArguments`, so `HfArgumentParser` turns its fields (Skill-It's and the
Trainer's) into flags, exactly as in the transformers and TRL example scripts.

Usage (CPU, about a minute):

```bash
python examples/skillit_lego.py \
    --output_dir runs/example_lego \
    --mixing skill_it --eta 0.5 --rounds 6 --window 3 \
    --max_steps 120 --per_device_train_batch_size 32 --learning_rate 3e-3 \
    --use_cpu --report_to none

# the same settings from a file (YAML or JSON, keys = the flag names):
python examples/skillit_lego.py examples/skillit_lego.yaml
```

Baselines: `--mixing stratified` (uniform over skills), `--mixing random` (proportional to data size),
`--mixing no_graph` (Skill-It with the identity graph). The skills graph defaults to the LEGO chain reasoning graph
(variable i helps i + 1); `--graph_path graph.json` uses a learned one (`hf-skillit learn-graph`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.synthetic import (
    build_tokenizer,
    encode,
    lego_parent,
    lego_skills,
    make_lego,
    make_tiny_model,
    tiny_model_config,
)


@dataclass
class ScriptArguments:
    """The data and model of this example (Skill-It's and the Trainer's settings are `SkillItConfig` flags)."""

    k: int = field(default=5, metadata={"help": "LEGO variables, one skill each."})
    num_train_samples: int = field(default=10000, metadata={"help": "Training rows generated in all."})
    validation_per_skill: int = field(default=100, metadata={"help": "Validation rows per skill (paper: 100)."})
    edge_weight: float = field(default=0.5, metadata={"help": "Chain graph: weight of the edge i -> i + 1."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the tiny GPT-NeoX model."})
    num_layers: int = field(default=2, metadata={"help": "Layers of the tiny GPT-NeoX model."})


def chain_graph(skills: list[str], edge_weight: float) -> SkillsGraph:
    """The LEGO reasoning graph: 1 on the diagonal, `edge_weight` from each variable's parent to it."""
    matrix = np.eye(len(skills))
    for j, name in enumerate(skills):
        parent = lego_parent(int(name))
        if parent is not None:
            matrix[skills.index(str(parent)), j] = edge_weight
    return SkillsGraph(matrix, skills)


def main(script_args: ScriptArguments, training_args: SkillItConfig) -> SkillItTrainer:
    tokenizer = build_tokenizer()
    names = lego_skills(script_args.k)
    train = encode(make_lego(script_args.num_train_samples, k=script_args.k, seed=training_args.seed), tokenizer)
    validation = encode(
        make_lego(script_args.validation_per_skill * script_args.k, k=script_args.k, seed=training_args.seed + 1),
        tokenizer,
    )
    skills = SkillSet.from_column(train, column="skill", validation=validation, order=names)
    model = make_tiny_model(
        tiny_model_config(tokenizer=tokenizer, hidden_size=script_args.hidden_size, num_layers=script_args.num_layers),
        seed=training_args.seed,
    )
    graph = None if training_args.graph_path else chain_graph(names, script_args.edge_weight)
    trainer = SkillItTrainer(model=model, args=training_args, skills=skills, graph=graph, processing_class=tokenizer)
    trainer.train()
    for record in trainer.trajectory:
        mixture = " ".join(f"{s}={w:.2f}" for s, w in record["p"].items())
        losses = " ".join(f"{s}={v:.3f}" for s, v in record["eval_loss"].items())
        print(f"round {record['round']}: p {mixture} | loss {losses}")
    return trainer


if __name__ == "__main__":
    parser = HfArgumentParser((ScriptArguments, SkillItConfig))
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        script_args, training_args = parser.parse_yaml_file(os.path.abspath(sys.argv[1]))
    elif len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        script_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        script_args, training_args = parser.parse_args_into_dataclasses()
    main(script_args, training_args)
