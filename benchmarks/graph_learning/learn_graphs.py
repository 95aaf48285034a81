"""Learn the skills graph of a synthetic recipe (LEGO or addition, tiny model) with `hf_skillit.learn_graph`.

Reads the recipe's `model.tiny`, `data` and `training` sections, builds the same skills (training data, and
validation data from seed + 1 without rows seen in training, as `hf-skillit train` does) and the same
from-scratch model, and learns the graph with short runs of that model. Example (the shipped LEGO graph)::

    OMP_NUM_THREADS=1 python benchmarks/graph_learning/learn_graphs.py recipes/lego_pretrain.yaml --steps 1500 --eval-every 50 \\
        --edge-rule lego --target-loss 0.1 --diagonal 1 --save recipes/graphs/lego_k3.json

`--set section.key=value` changes the recipe (e.g. `--set data.synthetic=addition`), `--proxy key=value` the tiny
model of the graph-learning runs only (a smaller proxy, paper Appendix D.4). `--save` copies `graph.json`, the
heatmap and the raw measurements next to each other. The runs are kept in `--output-dir`: run the command again to
resume, or with `--num-shards N --shard-index I` in N processes. The last line printed is a JSON summary with the
graph under every edge rule derived from the same runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from hf_skillit import SkillSet
from hf_skillit.graph_learning import EDGE_RULES, METHODS, learn_graph, merge_runs
from hf_skillit.synthetic import build_tokenizer, encode, make_addition, make_lego, make_tiny_model, tiny_model_config

# The recipe's training settings that shape a graph-learning run (its length and mixture are learn_graph's).
TRAINING_KEYS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "eval_samples_per_skill",
    "seed",
    "use_cpu",
)
# The command-line options that are `learn_graph` settings of the same names, passed on as they are.
GRAPH_OPTIONS = ("method", "steps", "eval_every", "edge_rule", "target_loss", "diagonal", "num_shards", "shard_index")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="a recipe YAML with model.tiny and data.synthetic")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="recipe overrides")
    p.add_argument("--proxy", nargs="*", default=[], metavar="KEY=VALUE", help="model.tiny overrides for the runs")
    p.add_argument("--method", choices=METHODS, default="brute_force")
    p.add_argument("--steps", type=int, required=True, help="H, steps per run")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--edge-rule", choices=EDGE_RULES, default=None)
    p.add_argument("--target-loss", type=float, default=None)
    p.add_argument("--diagonal", type=float, default=None)
    p.add_argument("--output-dir", default=None, help="default: runs/graphs/<name of --save, or recipe>")
    p.add_argument("--save", default=None, help="copy the graph JSON here (and .png, .measurements.json beside)")
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--shard-index", type=int, default=0)
    return p.parse_args()


def _set(tree: dict[str, Any], dotted: str) -> None:
    key, _, value = dotted.partition("=")
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = yaml.safe_load(value)


def synthetic_skills(data: dict[str, Any], tokenizer) -> SkillSet:
    """The recipe's skills: `num_train_samples` rows, and `validation_per_skill` rows per skill from seed + 1."""
    generate = make_lego if data["synthetic"] == "lego" else make_addition
    kwargs = dict(data.get("generator") or {})
    seed = data.get("seed", 0)
    train = generate(data["num_train_samples"], seed=seed, **kwargs)
    kwargs.pop("proportions", None)
    names = sorted(set(train["skill"]), key=int)
    validation = generate(data.get("validation_per_skill", 100) * len(names), seed=seed + 1, **kwargs)
    seen = set(validation["text"])
    train = train.filter(lambda batch: [t not in seen for t in batch["text"]], batched=True)
    answer_only = data.get("answer_only", True)
    train, validation = (encode(ds, tokenizer, answer_only=answer_only) for ds in (train, validation))
    return SkillSet.from_column(train, column="skill", validation=validation, order=names)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    for override in args.set:
        _set(recipe, override)
    model, data, training = recipe["model"], recipe["data"], recipe["training"]
    if "tiny" not in model or "synthetic" not in data:
        raise SystemExit(
            "this script learns graphs of synthetic recipes with a tiny model; use hf-skillit learn-graph"
        )

    tokenizer = build_tokenizer()
    skills = synthetic_skills(data, tokenizer)
    tiny = dict(model["tiny"])
    for override in args.proxy:
        _set(tiny, override)
    model_seed = tiny.pop("seed", 0)
    # As `hf-skillit train` does: a position table at least as long as the encoded rows.
    tiny.setdefault("max_position_embeddings", max(64, len(skills.validation(skills.eval_skills[0])[0]["input_ids"])))
    config = tiny_model_config(tokenizer=tokenizer, **tiny)

    def model_init():
        return make_tiny_model(config, seed=model_seed)

    name = Path(args.save).stem if args.save else Path(args.recipe).stem
    output_dir = Path(args.output_dir or f"runs/graphs/{name}")
    description = "from-scratch " + ", ".join(f"{k}={v}" for k, v in tiny.items())
    start = time.perf_counter()
    graph = learn_graph(
        skills=skills,
        model_init=model_init,
        output_dir=output_dir,
        **{key: getattr(args, key) for key in GRAPH_OPTIONS},
        args={key: training[key] for key in TRAINING_KEYS if key in training} | {"disable_tqdm": True},
        processing_class=tokenizer,
        model_description=f"{description} (seed {model_seed}; {data['synthetic']} {data.get('generator', {})})",
    )
    elapsed = time.perf_counter() - start
    if graph is None:
        print(json.dumps({"shard": args.shard_index, "seconds": round(elapsed, 1), "complete": False}))
        return
    if args.save:
        save = Path(args.save)
        save.parent.mkdir(parents=True, exist_ok=True)
        graph.save(save)
        shutil.copyfile(output_dir / "graph.png", save.with_suffix(".png"))
        shutil.copyfile(output_dir / "measurements.json", save.with_suffix(".measurements.json"))

    # Every rule's graph from the same runs: the comparison of RESULTS.md, with no extra training.
    rules = {}
    for rule in EDGE_RULES if args.method == "brute_force" else ("delta", "positive"):
        if rule == "lego" and args.target_loss is None:
            continue
        target = args.target_loss if rule == "lego" else None
        other = merge_runs(output_dir, edge_rule=rule, target_loss=target, diagonal=args.diagonal, write=False)
        rules[rule] = [[round(v, 4) for v in row] for row in other.matrix.tolist()]
    summary = {
        "skills": list(graph.train_skills),
        "graph": graph.matrix.tolist(),
        "rules": rules,
        "cost": graph.metadata["cost"],
        "wall_seconds": round(elapsed, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
