"""Skill discovery (Skill-It §2.3, Appendix D.2) on a planted pool of three skills with different learning curves.

"easy" always answers y0 y0 y0 y0 (learned within a few steps), "lookup" maps 8 keys to fixed answers (learned
later), "noise" answers random values (never learned: its loss stays near ln 16). The samples of a skill share a loss trajectory,
so clustering the trajectories must recover the skills.
"""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_skillit import SkillSet
from hf_skillit.cli import main
from hf_skillit.collator import LMCollator
from hf_skillit.discovery import (
    cluster_skills,
    draw_mixtures,
    embed_samples,
    loss_trajectories,
    per_sample_loss,
    recovery_accuracy,
    standardize,
)
from hf_skillit.evaluation import scored_token_loss
from hf_skillit.synthetic import build_tokenizer, encode, make_tiny_model, tiny_model_config

N = 16
KEYS, VALUES = [f"x{i}" for i in range(N)], [f"y{i}" for i in range(N)]
TOKENIZER = build_tokenizer([*KEYS, *VALUES, "pa", "pb", "pc", "=", "."])
SKILLS = ("easy", "lookup", "noise")
ARGS = {
    "learning_rate": 1e-2,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 128,
    "use_cpu": True,
    "report_to": "none",
    "disable_tqdm": True,
    "logging_steps": 1000,
    "seed": 0,
}


def _rows(skill: str, n: int, seed: int) -> Dataset:
    """`n` rows of a skill; answers are 4 tokens, so a row's mean loss is steadier than one token's."""
    rng = random.Random(f"{skill}-{seed}")
    perm = random.Random(1).sample(range(N), N)
    prefix = dict(zip(SKILLS, ("pa", "pb", "pc"), strict=True))[skill]
    rows = []
    for _ in range(n):
        i = rng.randrange(8)
        answer = {
            "easy": ["y0"] * 4,
            "lookup": [VALUES[perm[(4 * i + j) % N]] for j in range(4)],
            "noise": [VALUES[rng.randrange(N)] for _ in range(4)],
        }[skill]
        prompt = f"{prefix} {KEYS[i]} ="
        rows.append(
            {"prompt": prompt, "answer": " ".join(answer), "text": f"{prompt} {' '.join(answer)} .", "skill": skill}
        )
    return encode(Dataset.from_list(rows), TOKENIZER)


def _groups() -> SkillSet:
    return SkillSet({s: _rows(s, 400, seed=0) for s in SKILLS}, {})


def _pool() -> Dataset:
    from datasets import concatenate_datasets

    return concatenate_datasets([_rows(s, 30, seed=1) for s in SKILLS])


class CountingInit:
    """A fresh tiny model per call; optionally interrupts (as a killed process would) at call `fail_at`."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        config = tiny_model_config(tokenizer=TOKENIZER, hidden_size=32, num_layers=1, num_heads=2)
        return make_tiny_model(config, seed=0)


def _trajectories(output_dir, model_init, **kwargs) -> np.ndarray:
    settings = {"groups": _groups(), "pool": _pool(), "steps": 40, "eval_every": 10, "runs": 3}
    settings.update(args=ARGS, processing_class=TOKENIZER, model_init=model_init, output_dir=output_dir)
    return loss_trajectories(**{**settings, **kwargs})


@pytest.mark.slow  # about 8 s of CPU; 30 s of wall time on a shared machine
def test_planted_skills_are_recovered_and_an_interrupted_run_resumes(tmp_path):
    init = CountingInit(fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        _trajectories(tmp_path, init)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-0.npz"]
    init.fail_at = None
    features = _trajectories(tmp_path, init)
    assert init.calls == 4  # run 0 is not trained again: only the run that was killed and the one after it
    assert features.shape == (90, 3 * 4)
    assert np.isfinite(features).all()
    truth = np.array(_pool()["skill"])
    # The easy skill ends learned in some run (how well depends on its share of the mixture), the noise skill near
    # ln 16 = 2.8 in every run.
    last = features[:, [3, 7, 11]]
    assert last[truth == "easy"].min(1).max() < 0.3 and (last[truth == "noise"].mean(0) > 2.0).all()
    for seed in range(3):
        labels = cluster_skills(features, 3, seed=seed)
        assert recovery_accuracy(truth, labels) >= 0.95

    # The resumed runs equal uninterrupted ones; other settings are refused in that directory.
    assert np.array_equal(_trajectories(tmp_path / "uninterrupted", CountingInit()), features)
    with pytest.raises(ValueError, match="other settings.*alpha"):
        _trajectories(tmp_path, CountingInit(), alpha=0.5)


def test_one_group_runs_differ_by_data_order_only(tmp_path):
    """With no labels at all (one group), the runs differ by data order only, and the curves still separate."""
    groups = SkillSet({"all": Dataset.from_list([r for s in SKILLS for r in _rows(s, 200, seed=0)])}, {})
    features = _trajectories(tmp_path, CountingInit(), groups=groups, runs=2)
    assert features.shape == (90, 8)
    assert not np.array_equal(features[:, :4], features[:, 4:])  # run r shuffles with data_seed + r
    assert recovery_accuracy(_pool()["skill"], cluster_skills(features, 3)) >= 0.95


def test_bad_input_is_refused_before_training(tmp_path):
    init = CountingInit()
    unscored = _pool().map(lambda row: {"labels": [-100] * len(row["labels"])})
    with pytest.raises(ValueError, match="no pool sample has a scored token"):
        _trajectories(tmp_path, init, pool=unscored)
    partly = _pool().map(
        lambda row, i: {"labels": [-100] * len(row["labels"]) if i == 5 else row["labels"]}, with_indices=True
    )
    with pytest.raises(ValueError, match=r"1 pool samples have a scored token.*rows \[5\]"):
        _trajectories(tmp_path, init, pool=partly)
    with pytest.raises(ValueError, match="eval_every must be a positive divisor of steps=10"):
        _trajectories(tmp_path, init, steps=10, eval_every=3)
    assert init.calls == 0

    features = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match="num_skills must be an integer >= 2"):
        cluster_skills(features, 1)
    with pytest.raises(ValueError, match="num_skills=7 is more than the 6 samples"):
        cluster_skills(features, 7)
    features[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"features of 1 samples hold NaN.*rows \[4\]"):
        cluster_skills(features, 2)
    with pytest.raises(ValueError, match="same length"):
        recovery_accuracy([0, 1], [0, 1, 1])


def test_recovery_accuracy_is_the_best_one_to_one_matching():
    # Clusters 1 -> a (2 rows), 0 -> b (2), 2 -> c (1): 5 of 6, whatever the names.
    assert recovery_accuracy(["a", "a", "b", "b", "c", "c"], [1, 1, 0, 0, 0, 2]) == pytest.approx(5 / 6)
    # More clusters than skills: the extra cluster's rows count as wrong.
    assert recovery_accuracy([0, 0, 0, 1], [0, 0, 2, 1]) == pytest.approx(3 / 4)
    assert recovery_accuracy([0, 1, 2], [2, 0, 1]) == 1.0


def test_standardising_stops_a_large_noisy_feature_from_deciding_the_clusters():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 50)
    features = np.stack([truth + rng.normal(0, 0.01, 100), rng.normal(0, 1000, 100)], axis=1)
    z = standardize(features)
    assert np.allclose(z.mean(0), 0) and np.allclose(z.std(0), 1)
    assert np.allclose(z[:, 0], (features[:, 0] - features[:, 0].mean()) / features[:, 0].std())
    assert recovery_accuracy(truth, cluster_skills(features, 2)) == 1.0
    assert recovery_accuracy(truth, cluster_skills(features, 2, standardized=False)) < 0.8
    labels = cluster_skills(features, 2, seed=3)
    assert labels[0] == 0  # numbered by first appearance


def test_mixtures_are_dirichlet_draws_that_depend_only_on_seed_and_run():
    mixtures = draw_mixtures(3, 5, alpha=1.0, seed=7)
    assert mixtures.shape == (5, 3) and np.allclose(mixtures.sum(1), 1) and (mixtures > 0).all()
    assert np.array_equal(draw_mixtures(3, 2, seed=7), mixtures[:2])  # more runs keep the earlier ones
    assert np.array_equal(draw_mixtures(1, 2), [[1.0], [1.0]])
    with pytest.raises(ValueError, match="alpha"):
        draw_mixtures(3, 2, alpha=0)


def test_per_sample_loss_and_embeddings_match_unpadded_forward_passes():
    model = CountingInit()()
    rows = Dataset.from_list(
        [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}, {"input_ids": [9, 10], "labels": [-100, 10]}]
    )
    collator = LMCollator(pad_token_id=TOKENIZER.pad_token_id)
    losses = per_sample_loss(model, rows, collator, batch_size=2)
    mean = embed_samples(model, rows, collator, pooling="mean", batch_size=2)
    last = embed_samples(model, rows, collator, pooling="last", batch_size=2)
    with torch.no_grad():
        for i, row in enumerate(rows):
            ids = torch.tensor([row["input_ids"]])
            out = model(input_ids=ids, output_hidden_states=True)
            total, count = scored_token_loss(out.logits, torch.tensor([row["labels"]]))
            assert losses[i] == pytest.approx(float(total / count), abs=1e-5)
            assert np.allclose(mean[i], out.hidden_states[-1][0].mean(0).numpy(), atol=1e-5)
            assert np.allclose(last[i], out.hidden_states[-1][0, -1].numpy(), atol=1e-5)


DEFAULT = str(Path(__file__).resolve().parents[1] / "recipes" / "lego_pretrain.yaml")
SHORT = [
    "training.max_steps=9",
    "training.rounds=3",
    "training.save_steps=9",
    "data.num_train_samples=150",
    "data.validation_per_skill=10",
    "model.tiny.hidden_size=32",
    "learn_graph.steps=10",
    "learn_graph.eval_every=5",
]


@pytest.fixture
def keep_torch_threads():
    """The CLI runs tiny models on one thread (a process-wide setting): give the next tests their own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_cli_discovers_skills_then_learns_the_graph_and_trains_on_them(tmp_path, capsys, keep_torch_threads):
    out = tmp_path / "found"
    argv = ["discover-skills", DEFAULT, "--num-skills", "3", "--runs", "2", "--steps", "10", "--eval-every", "5"]
    argv += ["--output-dir", str(out), "--set", *SHORT, f"training.output_dir={tmp_path / 'run'}"]
    assert main(argv) == 0
    assert f"hf-skillit learn-graph {out / 'recipe.yaml'}" in capsys.readouterr().out
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    validation = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert len(validation) == 30 and {r["true_skill"] for r in validation} == {"1", "2", "3"}
    rows = train + validation
    assert {r["skill"] for r in rows} == {"c0", "c1", "c2"}
    report = json.loads((out / "report.json").read_text())
    assert report["features"] == [len(rows), 2 * 2] and report["pool"]["validation"] == 30
    assert report["accuracy"] == pytest.approx(
        recovery_accuracy([r["true_skill"] for r in rows], [r["skill"] for r in rows])
    )
    assert sum(sum(size.values()) for size in report["cluster_sizes"].values()) == len(rows)
    assert (out / "clusters.png").is_file() and len(list((out / "trajectories" / "runs").iterdir())) == 2

    # The written recipe trains on the discovered skills: learn its graph, then train with it.
    recipe = str(out / "recipe.yaml")
    assert main(["learn-graph", recipe]) == 0
    assert main(["train", recipe]) == 0
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert set(summary["loss"]) == {"c0", "c1", "c2"}
    # The recipe's own labels stay usable: stratified on the true skills from the same file.
    stratified = ["--set", "data.skill_column=true_skill", "training.mixing=stratified", "graph.path=null"]
    assert main(["train", recipe, *stratified, f"training.output_dir={tmp_path / 'strat'}"]) == 0
    assert set(json.loads((tmp_path / "strat" / "summary.json").read_text())["loss"]) == {"1", "2", "3"}

    # Output is never overwritten unasked, and never onto the recipe's own data files.
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds discovery output" in capsys.readouterr().err
    again = ["discover-skills", recipe, "--num-skills", "2", "--output-dir", str(out), "--overwrite"]
    assert main(again) == 2
    assert "would overwrite the recipe's own data file" in capsys.readouterr().err
    assert main([*argv[:3], "1", *argv[4:], "--overwrite"]) == 2
    assert "num_skills must be an integer >= 2" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_labels_an_unlabelled_text_file(tmp_path, capsys, keep_torch_threads):
    """Raw text with no skill labels: one `train_files` entry, runs on one group, rows labelled by their curves."""
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"text": r["text"], "kind": r["skill"]} for s in SKILLS for r in _rows(s, 120, seed=2).map(
        lambda row: {"text": TOKENIZER.decode(row["input_ids"][:-1])})]  # fmt: skip
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    TOKENIZER.save_pretrained(tmp_path / "tokenizer")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model": {
                    "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                    "tokenizer": str(tmp_path / "tokenizer"),
                },
                "data": {"train_files": {"all": str(corpus)}, "validation_per_skill": 60},
                "training": {
                    **ARGS,
                    "output_dir": str(tmp_path / "run"),
                    "max_steps": 40,
                    "rounds": 1,
                    "mixing": "random",
                },
            }
        )
    )
    out = tmp_path / "found"
    argv = ["discover-skills", str(recipe), "--num-skills", "3", "--no-labels", "--runs", "2", "--steps", "40"]
    assert main([*argv, "--eval-every", "10", "--output-dir", str(out)]) == 0
    assert "accuracy" not in capsys.readouterr().out  # one recipe skill: nothing to score against
    labelled = [
        json.loads(line) for f in ("train", "validation") for line in (out / f"{f}.jsonl").read_text().splitlines()
    ]
    assert len(labelled) == len(rows) and "true_skill" not in labelled[0]
    assert recovery_accuracy([r["kind"] for r in labelled], [r["skill"] for r in labelled]) >= 0.9
    assert json.loads((out / "report.json").read_text())["accuracy"] is None
