import json

import numpy as np
import pytest

from hf_skillit import SkillsGraph
from hf_skillit.plotting import plot_graph, plot_losses, plot_mixture, plot_run
from hf_skillit.rundir import GRAPH_PNG, LOSSES_PNG, MIXTURE_PNG, load_trajectory

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, skills=("1", "2", "3"), rounds=3, steps_per_round=10):
    rng = np.random.default_rng(0)
    with open(run_dir / "skillit_trajectory.jsonl", "w") as f:
        for r in range(1, rounds + 1):
            p = rng.dirichlet(np.ones(len(skills)))
            record = {
                "round": r,
                "global_step": r * steps_per_round,
                "p": dict(zip(skills, p.tolist(), strict=True)),
                "samples": dict.fromkeys(skills, 32),
                "eval_loss": {s: float(2.0 / r + i) for i, s in enumerate(skills)},
            }
            f.write(json.dumps(record) + "\n")


def test_plot_run_writes_mixture_loss_and_graph_pngs(tmp_path):
    write_run(tmp_path)
    SkillsGraph(np.eye(3), ["1", "2", "3"]).save(tmp_path / "skills_graph.json")
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == [MIXTURE_PNG, LOSSES_PNG, GRAPH_PNG]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_run_without_graph_and_with_many_skills(tmp_path):
    write_run(tmp_path, skills=[f"task_{i}" for i in range(23)], rounds=1)
    assert [p.name for p in plot_run(tmp_path)] == [MIXTURE_PNG, LOSSES_PNG]


def test_plot_functions_take_a_trajectory(tmp_path):
    write_run(tmp_path)
    rounds = load_trajectory(tmp_path)
    assert plot_losses(rounds, tmp_path / "l.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_mixture(rounds, tmp_path / "m.png").read_bytes()[:8] == PNG_MAGIC


def test_not_a_run_dir(tmp_path):
    with pytest.raises(ValueError, match="no skillit_trajectory.jsonl"):
        plot_run(tmp_path)
    (tmp_path / "skillit_trajectory.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rounds"):
        plot_run(tmp_path)


# ----- rendered data: every skill visible, targets highlighted, round 0 and chance ------------------------------

from matplotlib.patches import Rectangle  # noqa: E402

from hf_skillit.plotting import graph_figure, losses_figure, mixture_figure, run_targets  # noqa: E402


def coinciding_rounds(skills=("3", "1", "2", "4"), initial=True):
    """Rounds where skills 1, 2 and 4 always share one weight (and 2 and 4 one loss), in a non-sorted skill order."""
    rounds = []
    for r in range(1, 4):
        p = {s: 0.2 for s in skills}
        p["3"] = 1.0 - 0.2 * (len(skills) - 1)
        losses = {s: 1.0 / r + (0.1 if s == "1" else 0.0) for s in skills}
        rounds.append({"round": r, "global_step": 10 * r, "p": p, "eval_loss": losses})
    if initial:
        rounds[0]["initial_eval_loss"] = dict.fromkeys(skills, 4.0)
    return rounds


def skill_lines(axes):
    return {line.get_label(): line for line in axes.get_lines() if line.get_label().startswith("skill ")}


def test_mixture_draws_each_skill_with_its_own_style_in_skillset_order():
    rounds = coinciding_rounds()
    lines = skill_lines(mixture_figure(rounds).axes[0])
    assert list(lines) == ["skill 3", "skill 1", "skill 2", "skill 4"]  # the recorded order, not sorted
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines.values()}
    assert len(styles) == 4
    sizes = [line.get_markersize() for line in lines.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4  # coinciding markers nest
    for name, line in lines.items():
        skill = name.removeprefix("skill ")
        # Markers sit at the middle of each round, at the round's weight.
        assert list(line.get_xdata()[1::2]) == [5.0, 15.0, 25.0]
        assert list(line.get_ydata()[1::2]) == [r["p"][skill] for r in rounds]
        assert line.get_markevery() == slice(1, None, 2)


def test_targets_are_highlighted_in_mixture_and_losses():
    rounds = coinciding_rounds()
    for figure in (mixture_figure(rounds, target_skills=["2"]), losses_figure(rounds, target_skills=["2"])):
        lines = skill_lines(figure.axes[0])
        target = lines.pop("skill 2 (target)")
        assert all(target.get_linewidth() > line.get_linewidth() for line in lines.values())
        assert all(line.get_alpha() < 1 for line in lines.values()) and target.get_alpha() in (None, 1)


def test_losses_start_before_training_and_show_the_chance_line():
    rounds = coinciding_rounds()
    axes = losses_figure(rounds, chance={"1": 0.6931, "2": 0.6931, "3": 0.6931, "4": 0.6931}).axes[0]
    lines = skill_lines(axes)
    assert list(lines["skill 1"].get_xdata()) == [0, 10, 20, 30]
    assert list(lines["skill 1"].get_ydata()) == [4.0, 1.1, 0.6, 1.0 / 3 + 0.1]
    [chance] = [line for line in axes.get_lines() if line.get_label().startswith("chance")]
    assert list(chance.get_ydata()) == [0.6931, 0.6931] and chance.get_label() == "chance level: loss 0.693"
    assert axes.get_yscale() == "log"  # 4.0 down to 0.33: the rounds would be squashed on a linear axis
    # Without the loss before training: the rounds alone, on a linear axis from 0; two chance levels named.
    axes = losses_figure(coinciding_rounds(initial=False), chance={"1": 0.69, "3": 2.3}).axes[0]
    assert list(skill_lines(axes)["skill 1"].get_xdata()) == [10, 20, 30]
    assert axes.get_yscale() == "linear" and axes.get_ylim()[0] == 0
    labels = sorted(line.get_label() for line in axes.get_lines() if line.get_label().startswith("chance"))
    assert labels == ["chance level of skill 1: loss 0.69", "chance level of skill 3: loss 2.3"]


def test_graph_boxes_the_columns_in_use():
    graph = SkillsGraph(np.eye(5), ["1", "2", "3", "4", "5"])
    axes = graph_figure(graph, used_eval_skills=["3"]).axes[0]
    [box] = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    assert box.get_x() == 1.5 and box.get_width() == 1.0 and box.get_height() == 5
    weights = {label.get_text(): label.get_fontweight() for label in axes.get_xticklabels()}
    assert weights["3"] == "bold" and weights["1"] == "normal"
    # All columns in use (no targets): nothing boxed.
    assert not graph_figure(graph).axes[0].patches
    assert not graph_figure(graph, used_eval_skills=["1", "2", "3", "4", "5"]).axes[0].patches


def test_plot_run_reads_targets_from_the_saved_recipe(tmp_path):
    write_run(tmp_path)
    assert run_targets(tmp_path) == []
    (tmp_path / "recipe.yaml").write_text("training:\n  target_skills: [3]\n")
    (tmp_path / "summary.json").write_text(json.dumps({"loss": {}, "chance_loss": {"1": 0.69}}))
    SkillsGraph(np.eye(3), ["1", "2", "3"]).save(tmp_path / "skills_graph.json")
    assert run_targets(tmp_path) == ["3"]
    assert len(plot_run(tmp_path)) == 3


def test_close_chance_levels_make_one_line():
    # LEGO's ln 2 measured on three validation sets, and one addition-like skill at ln 10.
    chance = {"3": 0.683, "1": 0.691, "2": 0.693, "4": 2.303}
    axes = losses_figure(coinciding_rounds(initial=False), chance=chance).axes[0]
    lines = {line.get_label(): line for line in axes.get_lines() if line.get_label().startswith("chance")}
    assert set(lines) == {"chance level of skills 3, 1 and 2: loss 0.689", "chance level of skill 4: loss 2.3"}
    assert lines["chance level of skills 3, 1 and 2: loss 0.689"].get_ydata()[0] == pytest.approx(
        (0.683 + 0.691 + 0.693) / 3
    )


def test_plot_graph_of_a_large_graph(tmp_path):
    rng = np.random.default_rng(0)
    graph = SkillsGraph(
        rng.normal(size=(59, 12)), [f"train skill {i}" for i in range(59)], [f"eval {j}" for j in range(12)]
    )
    path = plot_graph(graph, tmp_path / "graph.png", title="59 x 12")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_log_axis_labels_do_not_overlap():
    # Losses from about ln(50) before training down to 0.04 (the demo's table fold): two decades on a log axis. Every
    # minor tick used to be labelled (0.09 0.08 0.07 ... piled into one column); now only 1, 2 and 5 times the
    # powers of ten are, and no two labels drawn touch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    losses = [3.92, 1.2, 0.9, 1.1, 0.15, 0.07, 0.04]
    rounds = [
        {"global_step": 100 * (t + 1), "eval_loss": {"1": losses[t + 1], "2": 2 * losses[t + 1]}}
        for t in range(len(losses) - 1)
    ]
    rounds[0]["initial_eval_loss"] = {"1": losses[0], "2": losses[0]}
    figure = losses_figure(rounds)
    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]
    assert axes.get_yscale() == "log"
    low, high = axes.get_ylim()
    shown = [t for t in axes.yaxis.get_major_ticks() if low <= t.get_loc() <= high and t.label1.get_text()]
    assert [t.label1.get_text() for t in shown] == ["0.05", "0.1", "0.2", "0.5", "1", "2", "5"][: len(shown)]
    assert all(not label.get_text() for label in axes.get_yticklabels(minor=True))
    boxes = [t.label1.get_window_extent() for t in shown]
    assert len(boxes) >= 5 and not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
