import json
from pathlib import Path

import pytest
import torch

from hf_skillit.cli import main
from hf_skillit.rundir import GRAPH_PNG, LOSSES_PNG, MIXTURE_PNG

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "recipes" / "lego_pretrain.yaml")
# The default recipe, shortened: a few steps on little data with a smaller model.
SHORT = [
    "training.max_steps=9",
    "training.rounds=3",
    "training.save_steps=3",
    "training.logging_steps=3",
    "data.num_train_samples=300",
    "data.validation_per_skill=10",
    "model.tiny.hidden_size=32",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The CLI runs tiny models on one thread (a process-wide setting): give the next tests their own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_default_recipe_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", DEFAULT, "--set", *SHORT, f"training.output_dir={run_dir}"]
    assert main(argv) == 0
    rounds = [json.loads(line) for line in (run_dir / "skillit_trajectory.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rounds] == [3, 6, 9]
    assert set(rounds[0]["p"]) == {"1", "2", "3"} and "next_p" in rounds[0]
    for name in (MIXTURE_PNG, LOSSES_PNG, GRAPH_PNG, "recipe.yaml", "summary.json", "skills_graph.json"):
        assert (run_dir / name).is_file(), name
    out = capsys.readouterr().out
    assert "Final validation per skill" in out and "accuracy" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"1", "2", "3"}
    assert summary["loss"] == pytest.approx(rounds[-1]["eval_loss"])  # the last round scored the final model

    # Another run into the same directory is refused unless overwrite_output_dir (the demo recipe sets it).
    assert main([*argv, "training.overwrite_output_dir=false"]) == 2
    assert "holds another run" in capsys.readouterr().err
    (run_dir / MIXTURE_PNG).unlink()
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / MIXTURE_PNG).is_file()


def test_learn_graph_writes_a_graph_to_train_with(tmp_path, capsys):
    out = tmp_path / "run"
    learn = ["learn_graph.method=approximate", "learn_graph.edge_rule=delta", "learn_graph.target_loss=null"]
    learn += ["learn_graph.steps=2", "learn_graph.eval_every=1", "graph.path=null", "graph.reasoning=chain"]
    assert main(["learn-graph", DEFAULT, "--set", *SHORT, f"training.output_dir={out}", *learn]) == 0
    graph = tmp_path / "run_graph" / "graph.json"
    assert graph.is_file()
    assert f"--set graph.path={graph} graph.reasoning=null" in capsys.readouterr().out
    assert main(["learn-graph", DEFAULT, "--set", "learn_graph.eval_every=7"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert main(["learn-graph", DEFAULT, "--set", "learn_graph.method=approximate"]) == 2
    assert "edge_rule lego needs method: brute_force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.learning_rat=0.1"], "unknown key 'learning_rat' in training; did you mean 'learning_rate'?"),
        (["training.max_steps=1.5"], "training.max_steps must be int, got 1.5 (float)"),
        (["graph.reasoning=null", "graph.path=missing/graph.json"], "graph.path: 'missing/graph.json' not found"),
        (["data.synthetic=null", "data.generator=null", "data.train_file=no/data.jsonl"], "'no/data.jsonl' not found"),
        (["training.target_skills=[9]"], "training.target_skills: unknown skill '9'"),
    ],
)
def test_user_errors_exit_2_with_one_line(overrides, message, tmp_path, capsys):
    argv = ["train", DEFAULT, "--set", f"training.output_dir={tmp_path}", *SHORT, *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-skillit: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors(tmp_path, capsys):
    assert main([]) == 2
    capsys.readouterr()
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml' not found" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "no skillit_trajectory.jsonl" in capsys.readouterr().err
