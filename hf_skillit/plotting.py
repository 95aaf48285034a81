"""Plots of a Skill-It run, read from its `skillit_trajectory.jsonl` (and `skills_graph.json`, when there is one).

- `plot_mixture`: the weight of each skill over training steps, constant within a round (paper Figure 20).
- `plot_losses`: each skill's validation loss before training (when the run measured it) and at the end of every
  round (paper Figure 4), with the chance level when it is known.
- `plot_graph`: the skills graph heatmap, with the columns the mixture uses boxed (`hf_skillit.graph_learning` draws its
  graph with it).
- `plot_mixing_law`: the mixing law a run estimated online (Aioli's `A`, recorded in each round; docs/aioli.md), one
  heatmap per round on one colour scale, oriented like a skills graph (rows: training skills), so it reads as the
  graph Aioli learned.

Every skill stays visible where weights or losses coincide (Skill-It often gives equal weights to skills with equal
graph rows and losses, and the stratified mixture always does): each skill has its own colour, line style and
marker, and the markers shrink from the first skill to the last, so coinciding points show as nested markers.
Target skills (`target_skills`, the skills a fine-tuning run is judged on) are drawn thicker and named
"(target)"; the other skills are drawn lighter. Skills appear in the order the run recorded them, which is the
`SkillSet`'s order (graph rows and columns keep the graph's order).

The `*_figure` functions return the matplotlib `Figure` (for notebooks and tests); the `plot_*` functions write a
PNG. They use matplotlib's object-oriented API (Agg backend, no pyplot state), so they work headless and inside
other programs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .graph import SkillsGraph
from .rundir import (
    GRAPH_JSON,
    GRAPH_PNG,
    LOSSES_PNG,
    MIXING_LAW_PNG,
    MIXTURE_PNG,
    RECIPE_NAME,
    SUMMARY_NAME,
    load_trajectory,
)

__all__ = [
    "graph_figure",
    "load_trajectory",
    "losses_figure",
    "mixing_law_figure",
    "mixture_figure",
    "plot_graph",
    "plot_mixing_law",
    "plot_losses",
    "plot_mixture",
    "plot_run",
    "run_targets",
]

_DPI = 100
# Beyond 10 skills the default colour cycle repeats; tab20 keeps 20 apart.
_MANY_SKILLS = 10
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_MARKER_SIZES = (9.0, 3.0)  # first skill, last skill
_LOG_RATIO = 5.0  # losses spanning more than this factor get a log axis
_CHANCE_TOLERANCE = 0.05  # chance levels closer than this (relative) are drawn as one line
# The key of the first trajectory record holding the losses measured before the first training step.
INITIAL_LOSS_KEY = "initial_eval_loss"
# summary.json's per-skill chance-level loss (see `hf_skillit.recipes`' report), drawn as the chance line.
CHANCE_LOSS_KEY = "chance_loss"


def _skills(rounds: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    return list(dict.fromkeys(skill for record in rounds for skill in record.get(key) or {}))


def _styles(skills: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour, line style, marker and marker size of each skill, fixed by its position."""
    n = len(skills)
    if n > _MANY_SKILLS:
        from matplotlib import colormaps

        colours = [colormaps["tab20"](i % 20) for i in range(n)]
    else:
        colours = [f"C{i}" for i in range(n)]
    big, small = _MARKER_SIZES
    return {
        skill: {
            "color": colours[i],
            "linestyle": _LINE_STYLES[i % len(_LINE_STYLES)],
            "marker": _MARKERS[i % len(_MARKERS)],
            # Shrinking sizes, drawn in order: a later (smaller) marker sits inside an earlier one it coincides with.
            "markersize": big - (big - small) * i / max(1, n - 1),
            "zorder": 2 + i / max(1, n),
        }
        for i, skill in enumerate(skills)
    }


def _emphasis(skill: str, targets: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The legend label and line weight of a skill: targets thick, the others light when there are targets."""
    if not targets:
        return f"skill {skill}", {"linewidth": 1.5}
    if skill in targets:
        return f"skill {skill} (target)", {"linewidth": 2.8}
    return f"skill {skill}", {"linewidth": 1.0, "alpha": 0.55}


def _new_figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=(7.0, 4.0), dpi=_DPI)
    return figure, figure.add_subplot()


def _legend(axes, num_entries: int) -> None:
    # Many skills: the legend goes beside the axes instead of over the curves.
    if num_entries > _MANY_SKILLS:
        axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + num_entries // 30)
    else:
        axes.legend(fontsize=8)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.savefig(path, format="png", bbox_inches="tight")
    figure.clear()
    return path


def _chance_groups(chance: Mapping[str, float]) -> list[tuple[float, list[str]]]:
    """Chance levels within `_CHANCE_TOLERANCE` of each other (the same task measured on different validation rows,
    e.g. LEGO's 0.683 to 0.693 around ln 2) as one line at their mean, with the skills it stands for."""
    groups: list[list[str]] = []
    for skill in sorted(chance, key=chance.get):
        if groups and chance[skill] <= chance[groups[-1][0]] * (1 + _CHANCE_TOLERANCE):
            groups[-1].append(skill)
        else:
            groups.append([skill])
    order = list(chance)
    return [
        (sum(chance[s] for s in group) / len(group), sorted(group, key=order.index))
        for group in sorted(groups, key=lambda g: order.index(g[0]))
    ]


def _chance_label(level: float, names: Sequence[str], skills: Sequence[str]) -> str:
    """The legend entry of a chance line, in words: "chance level: loss 0.693" when it stands for every skill,
    otherwise naming the skills ("chance level of skills 1 and 2: loss 1.34")."""
    if len(names) == len(skills):
        return f"chance level: loss {level:.3g}"
    which = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"chance level of skill{'s' if len(names) > 1 else ''} {which}: loss {level:.3g}"


def mixture_figure(
    rounds: Sequence[Mapping[str, Any]], title: str | None = None, target_skills: Sequence[str] = ()
) -> Figure:
    """Step plot of p_t: each skill's weight during each round, rounds laid out by their training steps, with the
    skill's marker at the middle of every round."""
    skills = _skills(rounds, "p")
    edges = [0] + [record["global_step"] for record in rounds]
    figure, axes = _new_figure()
    targets = [s for s in target_skills if s in skills]
    for skill, style in _styles(skills).items():
        weights = [record["p"].get(skill, 0.0) for record in rounds]
        # Points at each round's start and middle, drawn as steps: markers go on the middles.
        xs = [x for t in range(len(rounds)) for x in (edges[t], (edges[t] + edges[t + 1]) / 2)] + [edges[-1]]
        ys = [w for w in weights for _ in (0, 1)] + [weights[-1]]
        label, weight = _emphasis(skill, targets)
        axes.plot(xs, ys, drawstyle="steps-post", markevery=slice(1, None, 2), label=label, **style, **weight)
    axes.set_xlabel("step")
    axes.set_ylabel("weight per skill")
    axes.set_xlim(0, edges[-1])
    axes.set_ylim(bottom=0)
    axes.set_title(title or "Skill-It mixture")
    _legend(axes, len(skills))
    return figure


def losses_figure(
    rounds: Sequence[Mapping[str, Any]],
    title: str | None = None,
    target_skills: Sequence[str] = (),
    chance: Mapping[str, float] | None = None,
) -> Figure:
    """Each evaluation skill's validation loss at the end of every round; at step 0 the loss before training when
    the first record has it (`initial_eval_loss`); dashed grey lines at the chance levels given in `chance`."""
    initial = (rounds[0].get(INITIAL_LOSS_KEY) or {}) if rounds else {}
    skills = _skills(rounds, "eval_loss") or list(initial)
    if not skills:
        raise ValueError("the trajectory holds no validation losses to plot")
    figure, axes = _new_figure()
    targets = [s for s in target_skills if s in skills]
    for skill, style in _styles(skills).items():
        points = [(0, initial[skill])] if skill in initial else []
        points += [(r["global_step"], r["eval_loss"][skill]) for r in rounds if skill in r.get("eval_loss", {})]
        steps, losses = zip(*points, strict=True)
        label, weight = _emphasis(skill, targets)
        axes.plot(steps, losses, label=label, **style, **weight)
    levels = _chance_groups({s: float(chance[s]) for s in skills if chance and chance.get(s) is not None})
    for level, names in levels:
        axes.axhline(
            level, color="0.35", linestyle=(0, (6, 3)), linewidth=1.0, label=_chance_label(level, names, skills)
        )
    axes.set_xlim(left=0)
    values = [v for line in axes.get_lines()[: len(skills)] for v in line.get_ydata()]  # the skills' lines
    if min(values) > 0 and max(values) / min(values) > _LOG_RATIO:
        # The loss before training (about ln(vocabulary)) would squash the rounds against the axis.
        axes.set_yscale("log")
        # Labels at 1, 2 and 5 times the powers of ten only (a range over 5x holds at least two of them), written
        # plainly (0.05, not 5e-2); the other minor ticks stay unlabelled, or their labels pile up.
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_ylim(bottom=0)
    axes.set_xlabel("step")
    axes.set_ylabel("validation loss")
    axes.set_title(title or "Validation loss per skill")
    _legend(axes, len(skills) + len(levels))
    return figure


def graph_figure(
    graph: SkillsGraph, title: str | None = None, used_eval_skills: Sequence[str] | None = None
) -> Figure:
    """Heatmap of the graph (training skills down, evaluation skills across). When the mixture uses only some
    columns (`used_eval_skills`, e.g. a fine-tuning run's targets), those are boxed and their names bold; the others'
    names are grey. Small graphs show the value of every cell."""
    k, m = graph.shape
    figure = Figure(figsize=(max(4.0, 2.5 + 0.3 * m), max(3.0, 1.5 + 0.25 * k)), dpi=_DPI)
    axes = figure.add_subplot()
    matrix = graph.matrix
    bound = float(np.abs(matrix).max()) or 1.0
    if (matrix < 0).any():
        image = axes.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = axes.imshow(matrix, aspect="auto", cmap="Blues", vmin=0.0, vmax=bound)
    fontsize = 8 if max(k, m) <= 30 else 7
    axes.set_xticks(range(m), labels=graph.eval_skills, rotation=90, fontsize=fontsize)
    axes.set_yticks(range(k), labels=graph.train_skills, fontsize=fontsize)
    axes.set_ylabel("training skill")
    used = [s for s in graph.eval_skills if s in set(used_eval_skills or ())]
    if used and len(used) < m:
        for j, (name, label) in enumerate(zip(graph.eval_skills, axes.get_xticklabels(), strict=True)):
            if name in used:
                label.set_fontweight("bold")
                axes.add_patch(
                    Rectangle((j - 0.5, -0.5), 1.0, k, fill=False, edgecolor="crimson", linewidth=2.5, zorder=3)
                )
            else:
                label.set_color("0.55")
        axes.set_xlabel(f"evaluation skill (boxed: used by the mixture, {', '.join(used)})")
    else:
        axes.set_xlabel("evaluation skill")
    if k * m <= 100:
        for i in range(k):
            for j in range(m):
                dark = abs(matrix[i, j]) > 0.6 * bound
                axes.text(
                    j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=7, color="w" if dark else "k"
                )
    if title is not None:
        axes.set_title(title)
    figure.colorbar(image, ax=axes)
    return figure


def mixing_law_figure(rounds: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """One heatmap per round that recorded a mixing law `A` (`{training skill: {evaluation skill: value}}`), on one
    colour scale: the loss decrease each training skill's weight buys on each evaluation skill, as estimated from
    that round's probes (Aioli)."""
    laws = [(record["round"], record["A"]) for record in rounds if record.get("A")]
    if not laws:
        raise ValueError("the trajectory holds no mixing law (A): it was not trained with a probing mixer (aioli)")
    train = list(laws[0][1])
    evaluation = list(laws[0][1][train[0]])
    matrices = [np.array([[law[t][e] for e in evaluation] for t in train]) for _, law in laws]
    bound = max(float(np.abs(m).max()) for m in matrices) or 1.0
    negative = any((m < 0).any() for m in matrices)
    columns = min(len(laws), 4)
    rows = -(-len(laws) // columns)
    size = 1.2 + 0.35 * max(len(train), len(evaluation))
    figure = Figure(figsize=(size * columns + 1.0, size * rows + 0.6), dpi=_DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(laws) :]:
        ax.set_axis_off()
    for ax, (round_index, _), matrix in zip(axes.flat, laws, matrices, strict=False):
        image = ax.imshow(
            matrix,
            aspect="auto",
            cmap="RdBu_r" if negative else "Blues",
            vmin=-bound if negative else 0.0,
            vmax=bound,
        )
        if matrix.size <= 36:  # small laws: every value written in its cell
            for (i, j), value in np.ndenumerate(matrix):
                dark = abs(value) > 0.6 * bound
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_title(f"round {round_index}", fontsize=9)
        ax.set_xticks(range(len(evaluation)), labels=evaluation, rotation=90, fontsize=7)
        ax.set_yticks(range(len(train)), labels=train, fontsize=7)
    axes[0, 0].set_ylabel("training skill")
    axes[-1, 0].set_xlabel("evaluation skill")
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.suptitle(title or "Mixing law A estimated each round (loss decrease per unit of weight)")
    return figure


def plot_mixing_law(rounds: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write `mixing_law_figure` as a PNG at `path`."""
    return _save(mixing_law_figure(rounds, title), path)


def plot_mixture(
    rounds: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str | None = None,
    target_skills: Sequence[str] = (),
) -> Path:
    """Write `mixture_figure` as a PNG at `path`."""
    return _save(mixture_figure(rounds, title, target_skills), path)


def plot_losses(
    rounds: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str | None = None,
    target_skills: Sequence[str] = (),
    chance: Mapping[str, float] | None = None,
) -> Path:
    """Write `losses_figure` as a PNG at `path`."""
    return _save(losses_figure(rounds, title, target_skills, chance), path)


def plot_graph(
    graph: SkillsGraph,
    path: str | os.PathLike,
    title: str | None = None,
    used_eval_skills: Sequence[str] | None = None,
) -> Path:
    """Write `graph_figure` as a PNG at `path`."""
    return _save(graph_figure(graph, title, used_eval_skills), path)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def run_targets(run_dir: str | os.PathLike) -> list[str]:
    """The target skills of the run in `run_dir`, from the `recipe.yaml` that `hf-skillit train` saves there
    (none for runs without one: pass `target_skills=` to `plot_run`)."""
    path = Path(run_dir) / RECIPE_NAME
    if not path.is_file():
        return []
    import yaml

    with open(path) as f:
        recipe = yaml.safe_load(f) or {}
    targets = (recipe.get("training") or {}).get("target_skills") or []
    return [str(t) for t in targets]


def plot_run(
    run_dir: str | os.PathLike,
    target_skills: Sequence[str] | None = None,
    chance: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write the mixture, loss, (if the run saved its graph) graph and (if it estimated one, Aioli) mixing-law PNGs
    into `run_dir`; return their paths.

    Args:
        run_dir: the run's `output_dir`.
        target_skills: the run's target skills; default: `training.target_skills` of the run's `recipe.yaml`.
        chance: each skill's chance-level loss; default: `chance_loss` of the run's `summary.json`, if any.
    """
    run_dir = Path(run_dir)
    rounds = load_trajectory(run_dir)
    name = run_dir.resolve().name
    targets = list(run_targets(run_dir) if target_skills is None else target_skills)
    if chance is None:
        chance = (_read_json(run_dir / SUMMARY_NAME) or {}).get(CHANCE_LOSS_KEY)
    written = [plot_mixture(rounds, run_dir / MIXTURE_PNG, f"Mixture per skill ({name})", targets)]
    if any(record.get("eval_loss") for record in rounds):
        title = f"Validation loss per skill ({name})"
        written.append(plot_losses(rounds, run_dir / LOSSES_PNG, title, targets, chance))
    if any(record.get("A") for record in rounds):
        written.append(plot_mixing_law(rounds, run_dir / MIXING_LAW_PNG, f"Mixing law A per round ({name})"))
    if (run_dir / GRAPH_JSON).is_file():
        graph = SkillsGraph.load(run_dir / GRAPH_JSON)
        written.append(plot_graph(graph, run_dir / GRAPH_PNG, f"Skills graph ({name})", targets or None))
    return written
