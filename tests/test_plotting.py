import json

import numpy as np
import pytest

from hf_skillit import SkillsGraph
from hf_skillit.plotting import (
    GRAPH_PNG,
    LOSSES_PNG,
    MIXTURE_PNG,
    load_trajectory,
    plot_losses,
    plot_mixture,
    plot_run,
)

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
