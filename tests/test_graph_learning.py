"""Graph learning (Algorithms 2 and 3) on a tiny model with a planted skills structure.

Skills A and B are one lookup task (x_i -> y_f(i)) behind different prefixes, each trained on half of the inputs and
validated on all of them, so training on A and B together teaches B more than B alone (and training on A alone
already lowers B's loss). Skills C and D are another lookup task on a disjoint vocabulary: training on C raises the
loss of A and B, and pairing C with A or B only takes data away from them.
"""

import json
import os
import random

import numpy as np
import pytest
from datasets import Dataset

from hf_skillit import SkillSet, SkillsGraph
from hf_skillit.graph_learning import learn_graph, merge_runs, plan_runs
from hf_skillit.synthetic import build_tokenizer, encode, make_tiny_model, tiny_model_config

N = 16
XS, YS = [f"x{i}" for i in range(N)], [f"y{i}" for i in range(N)]
US, VS = [f"u{i}" for i in range(N)], [f"v{i}" for i in range(N)]
TOKENIZER = build_tokenizer([*XS, *YS, *US, *VS, "pa", "pb", "pc", "pd", "=", "."])
ARGS = {
    "learning_rate": 1e-2,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "use_cpu": True,
    "report_to": "none",
    "disable_tqdm": True,
    "logging_steps": 1000,
    "seed": 0,
}


def _lookup(prefix: str, keys: list[str], values: list[str], inputs: range, repeat: int) -> Dataset:
    perm = random.Random(len(keys[0]) + len(prefix)).sample(range(N), N)
    rows = []
    for _ in range(repeat):
        for i in inputs:
            prompt = f"{prefix} {keys[i]} ="
            answer = values[perm[i]]
            rows.append({"prompt": prompt, "answer": answer, "text": f"{prompt} {answer} ."})
    return encode(Dataset.from_list(rows), TOKENIZER)


def _task(name: str, split: str) -> Dataset:
    """Skill `name`'s data; E (evaluation only) is B's prefix on the inputs that A trains on."""
    prefix = {"A": "pa", "B": "pb", "C": "pc", "D": "pd", "E": "pb"}[name]
    keys, values = (XS, YS) if name in "ABE" else (US, VS)
    if split == "validation":
        return _lookup(prefix, keys, values, range(N // 2) if name == "E" else range(N), 1)
    inputs = {"A": range(N // 2), "B": range(N // 2, N)}.get(name, range(N))
    return _lookup(prefix, keys, values, inputs, 8)


def _skills(train: str, validation: str) -> SkillSet:
    return SkillSet({s: _task(s, "train") for s in train}, {s: _task(s, "validation") for s in validation})


class CountingInit:
    """A fresh tiny model per call; optionally interrupts (as a killed process would) at call `fail_at`."""

    def __init__(self, fail_at: int | None = None):
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        config = tiny_model_config(
            tokenizer=TOKENIZER, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=8
        )
        return make_tiny_model(config, seed=0)


def _learn(output_dir, model_init, skills: str = "AB", **kwargs) -> SkillsGraph | None:
    settings = {"steps": 10, "eval_every": 5, "edge_rule": "delta", "args": ARGS, "processing_class": TOKENIZER}
    return learn_graph(
        skills=_skills(skills, skills), model_init=model_init, output_dir=output_dir, **{**settings, **kwargs}
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    init = CountingInit()
    graph = _learn(out, init, "ABC", steps=40, eval_every=10, edge_rule="positive", model_description="tiny")
    return out, graph, init


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A short brute-force run set in one process, to compare resumed and sharded runs with."""
    return _learn(tmp_path_factory.mktemp("reference"), CountingInit())


def test_brute_force_recovers_planted_edges(planted):
    out, graph, init = planted
    assert init.calls == 6  # 3 single runs + 3 pairs
    A = dict(zip(graph.train_skills, graph.matrix, strict=True))
    assert graph.train_skills == graph.eval_skills == ("A", "B", "C")
    assert A["A"][1] > 1.0 and A["B"][0] > 1.0, graph.matrix
    assert (graph.matrix >= 0).all()
    # C only takes data away from A and B (which, with less data, overfit their half of the lookup a bit less).
    assert max(graph.matrix[2, :2].max(), graph.matrix[:2, 2].max()) < 0.25 * min(A["A"][1], A["B"][0]), graph.matrix

    saved = SkillsGraph.load(out / "graph.json")
    np.testing.assert_allclose(saved.matrix, graph.matrix)
    meta = saved.metadata
    assert meta["method"] == "brute_force" and meta["steps"] == 40 and meta["edge_rule"] == "positive"
    assert meta["base_model"] == "tiny" and meta["seed"] == 0 and meta["cost"]["runs"] == 6
    measurements = json.loads((out / "measurements.json").read_text())
    assert measurements["initial_loss_spread"] < 1e-6
    assert measurements["runs"]["pair-0-1"]["steps"] == [0, 10, 20, 30, 40]
    assert (out / "graph.png").stat().st_size > 0
    assert sorted(os.listdir(out / "runs")) == sorted(f"{r.id}.json" for r in plan_runs("brute_force", "ABC", "ABC"))


def test_other_edge_rules_from_the_same_runs(planted):
    out, graph, init = planted
    calls = init.calls
    lego = merge_runs(out, edge_rule="lego", target_loss=1.5, diagonal=1.0)
    # A alone never learns B's half of the lookup, the pair (A, B) does; C only takes data away from A and B.
    np.testing.assert_array_equal(lego.matrix, [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    delta = merge_runs(out, edge_rule="delta", measure_at=20)
    measurements = json.loads((out / "measurements.json").read_text())
    np.testing.assert_allclose(delta.matrix, measurements["delta_pair"])
    assert measurements["measured_at_step"] == 20
    assert init.calls == calls  # no training
    written = (out / "graph.json").read_text()
    positive = merge_runs(out, edge_rule="positive", write=False)
    assert (out / "graph.json").read_text() == written
    np.testing.assert_array_equal(positive.matrix, graph.matrix)  # the rule learn_graph used


def test_approximate_out_of_domain(tmp_path):
    init = CountingInit()
    graph = learn_graph(
        skills=_skills("AC", "ED"),
        model_init=init,
        output_dir=tmp_path,
        method="approximate",
        steps=30,
        args=ARGS,
        processing_class=TOKENIZER,
    )
    assert init.calls == 2
    assert graph.train_skills == ("A", "C") and graph.eval_skills == ("E", "D")
    (ae, ad), (ce, cd) = graph.matrix
    assert ae > 0.5 and cd > 0.5 and ad < 0 and ce < 0, graph.matrix
    assert graph.metadata["method"] == "approximate" and graph.metadata["edge_rule"] == "delta"


def test_resume_skips_finished_runs(tmp_path, reference):
    with pytest.raises(KeyboardInterrupt):
        _learn(tmp_path, CountingInit(fail_at=3))
    finished = sorted(os.listdir(tmp_path / "runs"))
    assert finished == ["single-0.json", "single-1.json"]
    stamps = {name: os.stat(tmp_path / "runs" / name).st_mtime_ns for name in finished}
    with pytest.raises(ValueError, match=r"1 of 3 runs are not finished in .*: pair-0-1\."):
        merge_runs(tmp_path)

    init = CountingInit()
    graph = _learn(tmp_path, init)
    assert init.calls == 1
    assert {name: os.stat(tmp_path / "runs" / name).st_mtime_ns for name in finished} == stamps
    np.testing.assert_array_equal(graph.matrix, reference.matrix)
    assert _learn(tmp_path, init) is not None and init.calls == 1  # all done: nothing to train


def test_shards_merge_to_the_one_process_graph(tmp_path, reference):
    inits = [CountingInit(), CountingInit()]
    assert _learn(tmp_path, inits[0], num_shards=2, shard_index=0) is None
    graph = _learn(tmp_path, inits[1], num_shards=2, shard_index=1)
    assert [init.calls for init in inits] == [2, 1]
    np.testing.assert_array_equal(graph.matrix, reference.matrix)
    np.testing.assert_array_equal(merge_runs(tmp_path).matrix, reference.matrix)


def test_plan_runs_fine_tuning_targets():
    runs = plan_runs("brute_force", ["A", "B", "C"], ["B"])
    assert [(r.id, r.train_skills) for r in runs] == [
        ("single-1", ("B",)),
        ("pair-0-1", ("A", "B")),
        ("pair-1-2", ("B", "C")),
    ]
    assert [r.id for r in plan_runs("approximate", ["A", "B"], ["X"])] == ["single-0", "single-1"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": -5}, "steps must be a positive integer"),
        ({"eval_every": 3}, "eval_every=3 does not divide steps=10"),
        ({"method": "exhaustive"}, "unknown method 'exhaustive'"),
        ({"edge_rule": "ratio"}, "unknown edge_rule 'ratio'"),
        ({"method": "approximate", "edge_rule": "delta_diff"}, "needs method='brute_force'"),
        ({"edge_rule": "lego"}, "needs a finite target_loss"),
        ({"target_loss": 0.1}, "target_loss is only used by edge_rule='lego'"),
        ({"measure_at": 7}, "measure_at=7 must be a step of the loss curve"),
        ({"eval_skills": ["A", "Z"]}, "must be training skills; \\['Z'\\]"),
        ({"eval_skills": ["A", "A"]}, "more than once"),
        ({"method": "approximate", "eval_skills": ["Z"]}, "evaluation skills \\['Z'\\] have no validation data"),
        ({"skills": _skills("ABC", "AB")}, "evaluation skills \\['C'\\] have no validation data"),
        ({"num_shards": 2, "shard_index": 2}, "shard_index must be in"),
        ({"model_init": "gpt2"}, "model_init must be a callable"),
    ],
)
def test_bad_input_fails_before_any_run(tmp_path, kwargs, message):
    init = CountingInit()
    settings = {"skills": _skills("ABC", "ABC"), "model_init": init, "output_dir": tmp_path, "steps": 10}
    with pytest.raises(ValueError, match=message):
        learn_graph(**{**settings, "args": ARGS, "processing_class": TOKENIZER, **kwargs})
    assert init.calls == 0 and not (tmp_path / "runs").exists()


def test_other_configuration_in_output_dir_is_refused(tmp_path):
    settings = {"skills": _skills("AB", "AB"), "output_dir": tmp_path, "args": ARGS, "processing_class": TOKENIZER}
    with pytest.raises(KeyboardInterrupt):
        learn_graph(model_init=CountingInit(fail_at=1), steps=10, **settings)
    init = CountingInit()
    with pytest.raises(ValueError, match="another learn_graph configuration \\(steps: 10 there, 20 now;"):
        learn_graph(model_init=init, steps=20, **settings)
    assert init.calls == 0


def test_graph_learning_arguments_stand_for_the_settings(tmp_path):
    """`graph_args=` learns the same graph as the settings passed one by one; settings given both ways are refused."""
    from hf_skillit.graph_learning import GraphLearningArguments

    one_by_one = _learn(tmp_path / "kwargs", CountingInit(), method="approximate")
    graph_args = GraphLearningArguments(method="approximate", steps=10, eval_every=5, edge_rule="delta")
    common = {"skills": _skills("AB", "AB"), "args": ARGS, "processing_class": TOKENIZER}
    together = learn_graph(output_dir=tmp_path / "args", model_init=CountingInit(), graph_args=graph_args, **common)
    np.testing.assert_array_equal(together.matrix, one_by_one.matrix)
    assert together.metadata["edge_rule"] == "delta" and together.metadata["method"] == "approximate"
    with pytest.raises(ValueError, match="give either graph_args or steps, not both"):
        learn_graph(output_dir=tmp_path / "x", model_init=CountingInit(), graph_args=graph_args, steps=10, **common)
    with pytest.raises(ValueError, match="eval_every=3 does not divide steps=10"):
        GraphLearningArguments(steps=10, eval_every=3)
    assert GraphLearningArguments(eval_every=3).with_steps(12).resolved()["edge_rule"] == "delta_diff"


def test_each_run_scores_its_untrained_model_once(tmp_path, monkeypatch):
    """The step-0 point of every run's curves is one evaluation inside the training loop (it used to be scored
    before `train()` and again inside it)."""
    from hf_skillit.trainer import SkillItTrainer

    steps_scored = []
    original = SkillItTrainer._validation_losses

    def counting(self, names):
        steps_scored.append(self.state.global_step)
        return original(self, names)

    monkeypatch.setattr(SkillItTrainer, "_validation_losses", counting)
    init = CountingInit()
    _learn(tmp_path, init)
    runs = [json.loads((tmp_path / "runs" / name).read_text()) for name in sorted(os.listdir(tmp_path / "runs"))]
    assert init.calls == len(runs) == 3  # A, B, and A with B
    assert steps_scored.count(0) == len(runs)  # one step-0 evaluation per run
    assert all(run["steps"] == [0, 5, 10] and len(run["loss"]["A"]) == 3 for run in runs)
