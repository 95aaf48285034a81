"""Plots of a Skill-It run, read from its `skillit_trajectory.jsonl` (and `skills_graph.json`, when there is one).

- `plot_mixture`: the weight of each skill over training steps, constant within a round (paper Figure 20).
- `plot_losses`: each skill's validation loss at the end of every round (paper Figure 4).
- the graph heatmap, by `SkillsGraph.plot`.

The figures are drawn with matplotlib's object-oriented API (Agg backend, no pyplot state), so they work
headless and inside other programs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .graph import SkillsGraph
from .rundir import GRAPH_JSON, GRAPH_PNG, LOSSES_PNG, MIXTURE_PNG, load_trajectory

__all__ = ["load_trajectory", "plot_losses", "plot_mixture", "plot_run"]

_DPI = 100
# Beyond 10 skills the default colour cycle repeats; tab20 keeps 20 apart.
_MANY_SKILLS = 10


def _skills(rounds: Sequence[dict[str, Any]], key: str) -> list[str]:
    return list(dict.fromkeys(skill for record in rounds for skill in record[key]))


def _figure(num_skills: int) -> tuple[Figure, Any]:
    figure = Figure(figsize=(7.0, 4.0), dpi=_DPI)
    axes = figure.add_subplot()
    if num_skills > _MANY_SKILLS:
        from matplotlib import colormaps

        axes.set_prop_cycle(color=[colormaps["tab20"](i % 20) for i in range(num_skills)])
    return figure, axes


def _save(figure: Figure, axes, num_skills: int, path: str | os.PathLike) -> Path:
    # Many skills: the legend goes beside the axes instead of over the curves.
    if num_skills > _MANY_SKILLS:
        axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + num_skills // 30)
    else:
        axes.legend(fontsize=8)
    path = Path(path)
    figure.savefig(path, format="png", bbox_inches="tight")
    figure.clear()
    return path


def plot_mixture(rounds: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Step plot of p_t: each skill's weight during each round, rounds laid out by their training steps."""
    skills = _skills(rounds, "p")
    edges = [0] + [record["global_step"] for record in rounds]
    figure, axes = _figure(len(skills))
    for skill in skills:
        weights = [record["p"].get(skill, 0.0) for record in rounds]
        axes.stairs(weights, edges, baseline=None, label=f"skill {skill}", linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("weight per skill")
    axes.set_xlim(0, edges[-1])
    axes.set_ylim(bottom=0)
    axes.set_title(title or "Skill-It mixture")
    return _save(figure, axes, len(skills), path)


def plot_losses(rounds: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Each evaluation skill's validation loss at the end of every round."""
    skills = _skills(rounds, "eval_loss")
    if not skills:
        raise ValueError("the trajectory holds no validation losses to plot")
    figure, axes = _figure(len(skills))
    for skill in skills:
        points = [(r["global_step"], r["eval_loss"][skill]) for r in rounds if skill in r["eval_loss"]]
        steps, losses = zip(*points, strict=True)
        axes.plot(steps, losses, marker="o", markersize=3, label=f"skill {skill}")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("step")
    axes.set_ylabel("validation loss")
    axes.set_title(title or "Validation loss per skill")
    return _save(figure, axes, len(skills), path)


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write the mixture, loss and (if the run saved its graph) graph PNGs into `run_dir`; return their paths."""
    run_dir = Path(run_dir)
    rounds = load_trajectory(run_dir)
    name = run_dir.resolve().name
    written = [plot_mixture(rounds, run_dir / MIXTURE_PNG, title=f"Mixture per skill ({name})")]
    if any(record["eval_loss"] for record in rounds):
        written.append(plot_losses(rounds, run_dir / LOSSES_PNG, title=f"Validation loss per skill ({name})"))
    if (run_dir / GRAPH_JSON).is_file():
        graph = SkillsGraph.load(run_dir / GRAPH_JSON)
        written.append(graph.plot(run_dir / GRAPH_PNG, title=f"Skills graph ({name})"))
    return written
