"""The out-of-domain demo on real text, end to end on CPU: `recipes/text_ood_demo.yaml`.

Stages (each is skipped when its output exists, so an interrupted run continues):

1. data: `text_sources.build` (sources, held-out lm-eval tasks, BPE tokenizer);
2. base: a tiny GPT-NeoX pre-trained on a uniform mix of the sources (the model continual pre-training starts from);
3. graph: Algorithm 3 from the base, one run per source, the lm-eval tasks as evaluation skills (k x m), as
   `hf-skillit learn-graph recipes/text_ood_demo.yaml` does;
4. runs: continual pre-training from the base with the static Skill-It mixture (`hf-skillit train
   recipes/text_ood_demo.yaml`, at each `--etas`) and with uniform sampling over the sources, lm-eval task scores
   logged before and after by `LMEvalCallback`.

Prints the mixture as the paper's Figure 7 table and a before/after table, and writes `results.json`.

    python benchmarks/out_of_domain/text_ood_demo.py [--recipe recipes/text_ood_demo.yaml] [--base-steps 300]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from text_sources import build as build_data

from hf_skillit import SkillItTrainer, SkillsGraph
from hf_skillit.graph_learning import learn_graph
from hf_skillit.mixing import dry_run_mixture
from hf_skillit.recipes import graph_learning_kwargs, load_recipe, make_trainer

BASE_MODEL = {
    "family": "gpt_neox",
    "hidden_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "max_position_embeddings": 128,
}


def _lm_eval_logs(trainer: SkillItTrainer) -> list[dict[str, float]]:
    return [
        {k.removeprefix("lm_eval/"): v for k, v in entry.items() if k.startswith("lm_eval/")}
        for entry in trainer.state.log_history
        if any(k.startswith("lm_eval/") for k in entry)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/text_ood_demo.yaml")
    parser.add_argument("--base-steps", type=int, default=300)
    parser.add_argument("--out", default="runs/text_ood", help="where the runs and results.json go")
    parser.add_argument("--etas", default=None, help="comma-separated etas of Skill-It runs (default: the recipe's)")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated training seeds of the runs (default: the recipe's)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:SECTION.KEY=VALUE,...",
        help="an extra run with these recipe overrides (repeatable), e.g. online Skill-It: "
        "skill_it_online:training.mixing=skill_it,training.rounds=3",
    )
    parser.add_argument("--only-variants", action="store_true", help="run the --variant runs alone")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_skillit").setLevel(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    raw = yaml.safe_load(Path(args.recipe).read_text())
    times: dict[str, float] = {}

    # 1. data
    start = time.perf_counter()
    data_dir = Path(raw["data"]["train_files"]["python"]).parent.parent
    if not (data_dir / "manifest.json").is_file():
        build_data(data_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    times["data"] = time.perf_counter() - start

    # 2. base model: the recipe's model directory, trained on a uniform mix of the sources when missing
    start = time.perf_counter()
    base_dir = raw["model"]["name_or_path"]
    if not os.path.isfile(os.path.join(base_dir, "config.json")):
        base_raw = {key: copy.deepcopy(raw[key]) for key in ("data", "training")}
        base_raw["model"] = {"tiny": {**BASE_MODEL, "seed": 0}, "tokenizer": str(data_dir / "tokenizer")}
        base_raw["training"].update(
            mixing="random",
            max_steps=args.base_steps,
            output_dir=base_dir,
            overwrite_output_dir=True,
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=30,
        )
        trainer = make_trainer(load_recipe(None, raw=base_raw))
        trainer.train()
        trainer.save_model(base_dir)
        trainer.processing_class.save_pretrained(base_dir)
    times["base"] = time.perf_counter() - start

    # 3. graph: Algorithm 3 from the base, the lm-eval tasks as evaluation skills (hf-skillit learn-graph)
    start = time.perf_counter()
    recipe = load_recipe(args.recipe, check_graph=False)
    graph_path = Path(recipe.graph.path)
    graph = SkillsGraph.load(graph_path) if graph_path.is_file() else learn_graph(**graph_learning_kwargs(recipe))
    times["graph"] = time.perf_counter() - start
    eta = recipe.training.eta
    table = dry_run_mixture(graph, eta)
    print(f"\nGraph (rows: sources, columns: lm-eval tasks; per-token NLL change):\n{graph.matrix.round(4)}")
    print(f"\nStatic Skill-It mixture, eta = {eta}:\n{table}\n")

    # 4. continual pre-training from the base (hf-skillit train): the static Skill-It mixture at each eta, and
    # random sampling, which is uniform here (every source has the same number of rows). Runs already in
    # results.json are kept, not run again (results.json is written after each run).
    results_path = Path(args.out, "results.json")
    results: dict[str, Any] = json.loads(results_path.read_text())["runs"] if results_path.is_file() else {}
    etas = [float(e) for e in args.etas.split(",")] if args.etas else [eta]
    variants = [] if args.only_variants else [(f"skill_it_eta{e:g}", [f"training.eta={e}"]) for e in etas]
    variants += [] if args.only_variants else [("uniform", ["training.mixing=random"])]
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants.append((name, overrides.split(",") if overrides else []))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [recipe.training.seed]
    runs = [
        (name if len(seeds) == 1 else f"{name}_seed{seed}", [*overrides, f"training.seed={seed}"])
        for seed in seeds
        for name, overrides in variants
    ]
    for name, overrides in runs:
        if name in results:
            continue
        start = time.perf_counter()
        output_dir = os.path.join(args.out, name)
        recipe = load_recipe(
            args.recipe, [*overrides, f"training.output_dir={output_dir}", "training.overwrite_output_dir=true"]
        )
        trainer = make_trainer(recipe)
        trainer.train()
        before, after = _lm_eval_logs(trainer)
        results[name] = {
            "p": trainer.trajectory[0]["p"],
            "p_rounds": [record["p"] for record in trainer.trajectory],
            "eval_loss_rounds": [record["eval_loss"] for record in trainer.trajectory],
            "initial_eval_loss": trainer.trajectory[0].get("initial_eval_loss"),
            "lm_eval_before": before,
            "lm_eval_after": after,
            "source_loss_after": {s: trainer.trajectory[-1]["eval_loss"][s] for s in trainer.skills.eval_skills},
        }
        times[name] = time.perf_counter() - start
        _write_results(results_path, manifest, graph, eta, table, results, times)

    tasks = list(graph.eval_skills)
    cells = [f"{t} {m}" for t in tasks for m in ("nll", "acc")]
    lines = [f"| run | p ({', '.join(graph.train_skills)}) | " + " | ".join(cells) + " | mean task nll |"]
    lines.append("|---" * (len(cells) + 3) + "|")

    def row(label: str, p: str, metrics: dict[str, float]) -> str:
        values = [f"{metrics[f'{t}/{m}']:.4f}" for t in tasks for m in ("nll", "acc")]
        mean = sum(metrics[f"{t}/nll"] for t in tasks) / len(tasks)
        return f"| {label} | {p} | " + " | ".join(values) + f" | {mean:.4f} |"

    lines.append(row("base (before)", "-", next(iter(results.values()))["lm_eval_before"]))
    for name, result in results.items():
        p = " / ".join(f"{result['p'][s]:.3f}" for s in graph.train_skills)
        lines.append(row(f"{name} (after)", p, result["lm_eval_after"]))
    print("\n".join(lines))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    _write_results(results_path, manifest, graph, eta, table, results, times)


def _write_results(path: Path, manifest: dict, graph: SkillsGraph, eta: float, table: str, results: dict, times: dict):
    record = {
        "manifest": {k: manifest[k] for k in ("python", "sources", "tasks")},
        "graph": graph.to_dict(),
        "eta": eta,
        "mixture_table": table,
        "runs": results,
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
