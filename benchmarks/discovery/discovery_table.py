"""Table 3 analog (Skill-It Appendix D.2): recover a recipe's skills by clustering loss trajectories or embeddings.

The pool is what `hf-skillit discover-skills` labels: the recipe's training rows followed by its validation rows,
whose true skills are known. Every method gives a feature vector per pool sample. k-means
([`hf_skillit.discovery.cluster_skills`], k = the number of true skills) runs once per k-means seed. The table gives
the mean ± std (ddof 1) over those seeds of the Hungarian-matched accuracy in two settings: fitted on the validation
rows alone (the paper's setting: 100 rows per skill), and fitted on the whole pool (what discover-skills writes).
A third column is a diagnostic: how well 2 clusters of the validation rows match the answer token (LEGO's answer
bit), i.e. whether the features encode the answer rather than the skill.

The methods:
- loss trajectories, the paper's protocol: R runs with Dirichlet(1) mixtures over the recipe's skills; the
  per-sample loss every `--eval-every` steps;
- loss trajectories with no labels: the same runs on all the training rows as one group, differing only in data
  order. This is `discover-skills --no-labels`: pass its `trajectories/` directory as `--one-group-dir` to reuse its
  runs;
- subsets of those runs (the first 1 and 3 runs, the last checkpoint of each run), at no extra cost;
- embeddings (the paper's baselines): the mean and the last-token hidden state of the base model (random weights:
  there is no pretrained model for these tasks offline), and of the same model after `--embed-steps` steps on a
  uniform mixture.

    python benchmarks/discovery/discovery_table.py --out runs/discovery_table --set data.num_train_samples=3000
    python benchmarks/discovery/discovery_table.py --out /tmp/quick --quick          # smoke test: a tiny model, 2 short runs

`--evaluate VALIDATION_FILE RUN_DIR ...` scores the final models of finished runs (the end-to-end comparison) on
the same rows grouped by their `true_skill`: per-skill loss and greedy accuracy, and their mean over skills.

The runs are resumable: run the command again after an interruption. The results go to `OUT/results.json`, and the
script prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from hf_skillit.collator import IGNORE_INDEX, LMCollator
from hf_skillit.discovery import cluster_skills, embed_samples, loss_trajectories, prepare_discovery, recovery_accuracy
from hf_skillit.graph_learning import fixed_mixture_run_args
from hf_skillit.recipes import load_recipe
from hf_skillit.trainer import SkillItTrainer

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "data.num_train_samples=300"]


def accuracies(features: np.ndarray, truth: np.ndarray, k: int, seeds: int) -> list[float]:
    return [recovery_accuracy(truth, cluster_skills(features, k, seed=s)) for s in range(seeds)]


def evaluate(validation_file: str, run_dirs: list[str]) -> None:
    """Final validation loss and accuracy per true skill of each run's saved model, on the same rows."""
    import datasets
    from transformers import AutoModelForCausalLM

    from hf_skillit.evaluation import per_skill_loss
    from hf_skillit.synthetic import answer_accuracy, build_tokenizer

    rows = datasets.load_dataset("json", data_files=validation_file, split="train")
    skills = sorted(set(rows["true_skill"]))
    by_skill = {s: rows.filter(lambda batch, s=s: [t == s for t in batch["true_skill"]], batched=True) for s in skills}
    collator = LMCollator(pad_token_id=build_tokenizer().pad_token_id)
    print("| run | " + " | ".join(f"loss {s}" for s in skills) + " | mean loss | mean accuracy (%) |")
    print("|---" * (len(skills) + 3) + "|")
    results = {}
    for run_dir in run_dirs:
        model = AutoModelForCausalLM.from_pretrained(run_dir)
        losses = per_skill_loss(model, by_skill, collator, batch_size=100, device=torch.device("cpu"))
        accuracy = answer_accuracy(model, None, rows, batch_size=100, skill_column="true_skill")
        results[run_dir] = {"loss": losses, "accuracy": accuracy}
        cells = " | ".join(f"{losses[s]:.3f}" for s in skills)
        print(
            f"| {run_dir} | {cells} | {np.mean(list(losses.values())):.3f} | {100 * np.mean(list(accuracy.values())):.1f} |"
        )
    print(json.dumps(results))


def main() -> None:
    if sys.argv[1:2] == ["--evaluate"]:
        return evaluate(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "lego_pretrain.yaml"))
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=10, help="R (paper: 10)")
    parser.add_argument("--steps", type=int, default=600, help="steps of each run")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--embed-steps", type=int, default=1500, help="training of the 'trained model' embeddings")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mixtures (the model's is the recipe's)")
    parser.add_argument("--kmeans-seeds", type=int, default=10)
    parser.add_argument("--one-group-dir", default=None, help="trajectories/ of a discover-skills --no-labels run")
    parser.add_argument("--quick", action="store_true", help="a tiny model, 2 runs of 60 steps")
    args = parser.parse_args()
    if args.quick:
        args.overrides = QUICK + args.overrides
        args.runs, args.steps, args.eval_every, args.embed_steps = 2, 60, 20, 60
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    recipe = load_recipe(args.recipe, args.overrides, check_graph=False)
    settings = {"runs": args.runs, "steps": args.steps, "eval_every": args.eval_every, "seed": args.seed}
    jobs = {
        name: prepare_discovery(recipe, 2, out / name, use_labels=name == "mixtures", **settings)
        for name in ("mixtures", "one_group")
    }
    job = jobs["mixtures"]
    pool, truth = job.pool, np.array(job.true_labels)
    k = len(set(job.true_labels))
    validation = np.array(job.splits) == "validation"
    answers = np.array([[t for t in row if t != IGNORE_INDEX][0] for row in pool["labels"][:]])[validation]

    features, cpu = {}, {}
    for name, j in jobs.items():
        where = Path(args.one_group_dir) if name == "one_group" and args.one_group_dir else out / name / "trajectories"
        start = time.process_time()
        features[name] = loss_trajectories(
            groups=j.groups, pool=j.pool, **{**j.trajectory_kwargs, "output_dir": where}
        )
        cpu[name] = time.process_time() - start

    # Embedding baselines: the base model, and the base model trained on a uniform mixture.
    start = time.process_time()
    kwargs = job.trajectory_kwargs
    tokenizer, model_init = kwargs["processing_class"], kwargs["model_init"]
    collator = LMCollator(pad_token_id=tokenizer.pad_token_id)
    set_seed(recipe.training.seed)
    base = model_init()
    embeddings = {f"Base model, {p} token": embed_samples(base, pool, collator, pooling=p) for p in ("mean", "last")}
    uniform = dict.fromkeys(job.groups.train_skills, 1.0)
    run_args = fixed_mixture_run_args(recipe.training, out / "embed_run", args.embed_steps, args.embed_steps, uniform)
    set_seed(run_args.seed)
    trainer = SkillItTrainer(model=model_init(), args=run_args, skills=job.groups, processing_class=tokenizer)
    trainer.train()
    for p in ("mean", "last"):
        name = f"Trained model ({args.embed_steps} steps, uniform mixture), {p} token"
        embeddings[name] = embed_samples(trainer.model, pool, collator, pooling=p)
    cpu["embeddings"] = time.process_time() - start

    c = args.steps // args.eval_every
    rows = {}
    for name, label in (("mixtures", "random mixtures of the skills"), ("one_group", "one group, no labels")):
        f = features[name]
        rows[f"Loss trajectories, {label}, R = {args.runs}"] = f
        for r in (1, 3):
            if r < args.runs:
                rows[f"Loss trajectories, {label}, first {r} run(s)"] = f[:, : r * c]
        rows[f"Last checkpoint of each run only, {label}, R = {args.runs}"] = f[:, c - 1 :: c]
    rows.update(embeddings)
    table = {}
    for name, x in rows.items():
        table[name] = {
            "validation": accuracies(x[validation], truth[validation], k, args.kmeans_seeds),
            "pool": accuracies(x, truth, k, args.kmeans_seeds),
            "answer_bit": accuracies(x[validation], answers, 2, args.kmeans_seeds),
        }
    summary = {
        "command": "python benchmarks/discovery/discovery_table.py " + " ".join(sys.argv[1:]),
        "recipe": args.recipe,
        "overrides": args.overrides,
        "pool": {"train": int((~validation).sum()), "validation": int(validation.sum())},
        "k": k,
        "cpu_seconds": {key: round(v, 1) for key, v in cpu.items()},
        "accuracy": table,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))

    def cell(values: list[float]) -> str:
        return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"

    print(
        f"| Features | validation rows ({validation.sum()}) | whole pool ({len(pool)}) | "
        "2 clusters vs the answer token |\n|---|---|---|---|"
    )
    for name, value in table.items():
        print(f"| {name} | {cell(value['validation'])} | {cell(value['pool'])} | {cell(value['answer_bit'])} |")
    print("CPU seconds:", summary["cpu_seconds"])


if __name__ == "__main__":
    main()
