"""How far one eta moves the Skill-It mixture on suites of different loss scales, with and without normalisation
(issue 23): measured loss trajectories replayed through `SkillItMixer`, no training.

Each suite contributes its graph and losses measured once: the losses before training (round 0) and at the ends of
the first rounds. For each eta and each `loss_normalization`, the mixer is fed those losses as the trainer would
(round 0 through `set_initial_losses`, then one `update` per round) and the table gives the mixture's extremes:
its largest weight and its smallest weight over the relevant skills (the support of skill-stratified sampling)
after round 1 (p_2) and once the window of 3 rounds is full (p_4). With the paper's rule the same eta gives a
uniform-looking mixture on one suite and a collapsed one on another; with `loss_normalization="initial"` the
update reads losses relative to round 0, whatever their unit.

Suites (paths as written by the issue-23 runs; a missing one is left out):
- fold: `benchmarks/reproduction/reproduce.py` run JSON (its curve holds the losses at steps 0, 200, 400, 600:
  round 0 and the ends of rounds 1-3 of 200 steps), graph `recipes/graphs/fold_k3.json`;
- text: an online Skill-It run of `benchmarks/out_of_domain/text_ood_demo.py --variant ...` (results.json: the
  lm-eval tasks' NLL before training and at the ends of its 3 rounds of 100 steps), its learned graph;
- lego_smollm2: round-0 losses printed by `hf-skillit train recipes/lego_pretrain_smollm2.yaml --dry-run
  --measure` (SmolLM2-135M, pretrained; one measurement, so every round repeats them: the cheap proxy).

    python benchmarks/mixer_options/spread.py --fold RUN.json --text results.json:RUN_NAME --text-graph graph.json \
        --lego-measure measure.txt
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np

from hf_skillit import SkillsGraph
from hf_skillit.mixing import SkillItMixer, relevant_skills

ETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def fold_losses(path: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    curve = {point["step"]: point["loss"] for point in json.loads(open(path).read())["curve"]}
    return curve[0], [curve[step] for step in (200, 400, 600)]


def text_losses(path: str, run: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    record = json.loads(open(path).read())["runs"][run]
    # Round 0 of the lm-eval tasks: the callback's scores before the first step (a run without normalisation does
    # not score the evaluators into initial_eval_loss).
    before = record["lm_eval_before"]
    initial = {key.removesuffix("/nll"): value for key, value in before.items() if key.endswith("/nll")}
    return initial, record["eval_loss_rounds"]


def measured_losses(path: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The round-0 losses of the first `--measure` table in `path`, repeated for 3 rounds."""
    text = open(path).read()
    block = text.split("round-0 loss", 1)[1].split("\n\n", 1)[0]
    losses = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\S+)\s+([0-9.]+)\s*$", block, re.M)}
    return losses, [losses] * 3


def extremes(graph: SkillsGraph, eta: float, normalization: str, initial, rounds) -> list[tuple[float, float]]:
    mixer = SkillItMixer(graph, eta=eta, window=3, loss_normalization=normalization)
    mixer.set_initial_losses({s: initial[s] for s in graph.eval_skills})
    support = [i for i, s in enumerate(graph.train_skills) if s in relevant_skills(graph)]
    out = []
    for losses in rounds:
        p = mixer.update({s: losses[s] for s in graph.eval_skills})
        out.append((p.max(), p[support].min()))
    return [out[0], out[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold", help="a reproduce.py run JSON on the table fold")
    parser.add_argument("--fold-graph", default="recipes/graphs/fold_k3.json")
    parser.add_argument("--text", help="RESULTS_JSON:RUN, an online Skill-It run of text_ood_demo.py")
    parser.add_argument("--text-graph", help="the text suite's graph.json")
    parser.add_argument("--lego-measure", help="output of --dry-run --measure on recipes/lego_pretrain_smollm2.yaml")
    parser.add_argument("--lego-graph", help="graph of the LEGO suite (default: the recipe's chain, edge 0.5)")
    args = parser.parse_args()
    suites = {}
    if args.fold:
        suites["fold (tiny GPT-2 from scratch)"] = (SkillsGraph.load(args.fold_graph), *fold_losses(args.fold))
    if args.text:
        path, _, run = args.text.rpartition(":")
        suites["text OOD (lm-eval NLL)"] = (SkillsGraph.load(args.text_graph), *text_losses(path, run))
    if args.lego_measure:
        initial, rounds = measured_losses(args.lego_measure)
        skills = sorted(initial)
        graph = (
            SkillsGraph.load(args.lego_graph)
            if args.lego_graph
            else SkillsGraph(np.eye(len(skills)) + 0.5 * np.eye(len(skills), k=1), skills)
        )
        suites["LEGO, SmolLM2-135M (round 0 only)"] = (graph, initial, rounds)
    print(
        "| suite | round-0 losses | eta | paper: p_2 max / min | paper: p_4 max / min | normalised: p_2 max / min "
        "| normalised: p_4 max / min |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (graph, initial, rounds) in suites.items():
        scale = ", ".join(f"{initial[s]:.2f}" for s in graph.eval_skills)
        for eta in ETAS:
            cells = []
            for normalization in ("none", "initial"):
                for p_max, p_min in extremes(graph, eta, normalization, initial, rounds):
                    cells.append(f"{p_max:.3f} / {p_min:.2g}")
            print(f"| {name} | {scale} | {eta:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
