"""Probe phases inside rounds (`hf_skillit.probing`) and the Aioli mixer (`mixing="aioli"`), with real training
steps on the tests' tiny model: the probes draw exactly their mixtures, the counts follow them, a resume inside a
probe is exact, the logged update equals a hand computation, and bad settings are refused before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SUBPROCESS_ENV, StopAt, run_two_ranks, skillit_config

from hf_skillit import SkillItConfig, SkillItTrainer
from hf_skillit.streams import SKILL_KEY, StreamState, round_draws

SKILLS = ["1", "2", "3"]
# 2 rounds of 16 steps; each round: 2 sweeps x 3 skills x 2 steps = 12 probe steps, then 4 steps on p.
AIOLI = dict(
    mixing="aioli",
    rounds=2,
    max_steps=32,
    eta=1.0,
    aioli_probe_steps=2,
    aioli_sweeps=2,
    aioli_one_hot_factor=0.6,
)


class SkillRecordingTrainer(SkillItTrainer):
    """Records the skill of every row of every training micro-batch, in order."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.trained_skills.extend(inputs[SKILL_KEY].tolist())
        return super().training_step(model, inputs, num_items_in_batch)


def train(output_dir, tokenizer, tiny_model, skills, callbacks=(), resume=None, **overrides):
    trainer = SkillRecordingTrainer(
        model=tiny_model(),
        args=skillit_config(output_dir, **{**AIOLI, **overrides}),
        skills=skills,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.trained_skills = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def units_of(record: dict) -> list[tuple[np.ndarray, int]]:
    """(mixture, steps) of each phase of a round record: its probes, then the rest of the round on p."""
    phases = [(np.array([p["mixture"][s] for s in SKILLS]), p["steps"]) for p in record["probes"]]
    return phases + [(np.array([record["p"][s] for s in SKILLS]), 16 - sum(p["steps"] for p in record["probes"]))]


@pytest.mark.parametrize("factor", [0.6, 1.0], ids=["mixed-probes", "one-hot-probes"])
def test_probes_draw_exactly_their_mixtures(tmp_path, tokenizer, tiny_model, skills, factor):
    trainer = train(tmp_path, tokenizer, tiny_model, skills, aioli_one_hot_factor=factor)
    trajectory = trainer.trajectory
    assert [r["global_step"] for r in trajectory] == [16, 32]
    sizes, state, unit, expected, batch = [200, 200, 200], StreamState.fresh(3), 0, [], 8
    for record in trajectory:
        start = record["global_step"] - 16
        assert [p["global_step"] for p in record["probes"]] == [start + 2 * i for i in range(1, 7)]
        assert sorted(p["label"] for p in record["probes"]) == sorted(SKILLS * 2), "2 sweeps: each skill twice"
        round_counts = np.zeros(3, dtype=int)
        for index, (mixture, steps) in enumerate(units_of(record)):
            drawn = []
            for _ in range(steps // 2):  # units of gcd(2, 16) = 2 steps, each its own stream epoch
                skills_drawn, _ = round_draws(sizes, mixture, state, 0, unit, 2 * batch)
                state.advance(np.bincount(skills_drawn, minlength=3).tolist(), sizes)
                drawn.extend(skills_drawn.tolist())
                unit += 1
            counts = np.bincount(drawn, minlength=3)
            round_counts += counts
            if index < len(record["probes"]):
                probe = record["probes"][index]
                assert probe["samples"] == dict(zip(SKILLS, counts.tolist(), strict=True)), (record["round"], index)
                if factor == 1.0:  # a one-hot probe trains on its skill alone
                    assert probe["samples"][probe["label"]] == steps * batch
            expected.extend(drawn)
        assert [record["samples"][s] for s in SKILLS] == round_counts.tolist()
    # Every trained row's skill, in order, is the stream's draw from its phase's mixture: exact boundaries.
    assert trainer.trained_skills == expected
    assert trajectory[0]["p"] != trajectory[1]["p"]


def comparable(record: dict) -> dict:
    out = {k: record[k] for k in ("round", "global_step", "samples", "tokens")}
    out["p"] = np.array([record["p"][s] for s in SKILLS])
    out["eval_loss"] = np.array([record["eval_loss"][s] for s in SKILLS])
    out["A"] = np.array([[record["A"][t][e] for e in SKILLS] for t in SKILLS])
    out["probes"] = [
        (p["label"], p["samples"], p["global_step"], [p["eval_loss"][s] for s in SKILLS]) for p in record["probes"]
    ]
    return out


@pytest.mark.parametrize("stop_step", [3, 20], ids=["inside-a-probe", "at-a-probe-end-of-round-2"])
def test_resume_inside_a_probe_is_exact(tmp_path, tokenizer, tiny_model, skills, stop_step):
    settings = dict(
        save_strategy="steps", save_steps=stop_step, gradient_accumulation_steps=2, per_device_train_batch_size=4
    )
    cut_dir = str(tmp_path / "cut")
    whole = train(tmp_path / "whole", tokenizer, tiny_model, skills, **settings)
    train(cut_dir, tokenizer, tiny_model, skills, callbacks=[StopAt(stop_step)], **settings)
    with open(os.path.join(cut_dir, f"checkpoint-{stop_step}", "skillit_state.json")) as f:
        state = json.load(f)
    assert state["layout"]["steps_per_unit"] == 2
    assert len(state["probe_records"]) == (1 if stop_step == 3 else 2)  # inside probe 2 / after probe 2 of round 2
    resumed = train(cut_dir, tokenizer, tiny_model, skills, resume=True, **settings)
    assert resumed.state.global_step == 32
    a, b = whole.trajectory, resumed.trajectory
    assert len(a) == len(b) == 2
    for x, y in zip(map(comparable, a), map(comparable, b), strict=True):
        assert x["samples"] == y["samples"] and x["tokens"] == y["tokens"] and x["global_step"] == y["global_step"]
        np.testing.assert_allclose(x["p"], y["p"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(x["eval_loss"], y["eval_loss"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(x["A"], y["A"], rtol=0, atol=1e-5)
        for (la, sa, ga, ea), (lb, sb, gb, eb) in zip(x["probes"], y["probes"], strict=True):
            assert (la, sa, ga) == (lb, sb, gb)
            np.testing.assert_allclose(ea, eb, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole.rounds.p_history, resumed.rounds.p_history, rtol=0, atol=1e-9)


def test_aioli_update_is_the_hand_computation_on_logged_losses(tmp_path, tokenizer, tiny_model, skills):
    """B from the logged losses around the probes (each probe's decrease from the evaluation before it, averaged
    over the sweeps), A = B W^-1, A shifted to >= 0 and scaled to sum 1, p ∝ p_prev exp(eta colsum A)."""
    eta, eps = 1.0, 0.6
    trajectory = train(tmp_path, tokenizer, tiny_model, skills, eta=eta).trajectory
    W = np.full((3, 3), (1 - eps) / 2) + np.eye(3) * (eps - (1 - eps) / 2)
    before = np.array([trajectory[0]["initial_eval_loss"][s] for s in SKILLS])
    log_weights = np.zeros(3)
    for record in trajectory:
        B = np.zeros((3, 3))  # rows: validation skills, columns: probed skills
        for probe in record["probes"]:
            after = np.array([probe["eval_loss"][s] for s in SKILLS])
            B[:, SKILLS.index(probe["label"])] += (before - after) / 2  # 2 sweeps
            before = after
        A = B @ np.linalg.inv(W)
        logged = np.array([[record["A"][t][e] for t in SKILLS] for e in SKILLS])  # back to rows = validation
        np.testing.assert_allclose(logged, A, rtol=1e-9, atol=1e-12)
        shifted = A - min(A.min(), 0)
        log_weights = log_weights + eta * (shifted / shifted.sum()).sum(axis=0)
        p = np.exp(log_weights) / np.exp(log_weights).sum()
        np.testing.assert_allclose([record["p"][s] for s in SKILLS], p, rtol=1e-9)
        before = np.array([record["eval_loss"][s] for s in SKILLS])  # the next round's losses before its probes
    assert not np.allclose(p, 1 / 3), "the mixture moved"


def test_ema_variant_restarts_from_uniform_each_round(tmp_path, tokenizer, tiny_model, skills):
    trajectory = train(tmp_path, tokenizer, tiny_model, skills, aioli_ema=0.5).trajectory
    smoothed = None
    for record in trajectory:
        A = np.array([[record["A"][t][e] for t in SKILLS] for e in SKILLS])
        shifted = A - min(A.min(), 0)
        A = shifted / shifted.sum()
        smoothed = A if smoothed is None else 0.5 * A + 0.5 * smoothed
        p = np.exp(smoothed.sum(axis=0)) / np.exp(smoothed.sum(axis=0)).sum()
        np.testing.assert_allclose([record["p"][s] for s in SKILLS], p, rtol=1e-9)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(aioli_one_hot_factor=1.5), "aioli_one_hot_factor must be in"),
        (dict(aioli_ema=1.0), "aioli_ema must be None or a number in"),
        (dict(aioli_probe_steps=0), "aioli_probe_steps must be an integer >= 1"),
        (dict(aioli_sweeps=2.5), "aioli_sweeps must be an integer >= 1"),
        (
            dict(mixing="skill_it"),
            "aioli_probe_steps, aioli_sweeps, aioli_one_hot_factor are options of mixing='aioli'",
        ),
        (dict(eta=0.0), "eta must be a finite number > 0"),
    ],
)
def test_bad_aioli_settings_are_refused_by_the_config(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        SkillItConfig(output_dir=str(tmp_path), use_cpu=True, **{**AIOLI, **settings})
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(aioli_sweeps=3), r"3 x 3 x 2 = 18 steps per round, which leaves none of the 16 steps"),
        (dict(aioli_one_hot_factor=0.3), r"one_hot_factor must be in \(1/k, 1\] = \(0.3333, 1\] for k=3"),
        (dict(aioli_one_hot_factor=1.0, aioli_diagonal=True), "aioli_diagonal needs aioli_one_hot_factor < 1"),
    ],
)
def test_settings_that_do_not_fit_the_skills_are_refused_before_training(
    tmp_path, tokenizer, tiny_model, skills, make_config, settings, message
):
    with pytest.raises(ValueError, match=message):
        SkillItTrainer(
            model=tiny_model(), args=make_config(**{**AIOLI, **settings}), skills=skills, processing_class=tokenizer
        )
    assert not (tmp_path / "skillit_trajectory.jsonl").exists()


# No-graph Skill-It and skill-stratified, 3 rounds of 4 steps on the tests' tiny model and skills (batch 8, seed 0,
# eta 2), as the code before probe phases existed (674a68a) recorded them, trained as in the test below:
# samples per round, p and eval_loss (rounded to 1e-9).
BEFORE_PROBES = json.loads(
    '{"no_graph":[{"samples":{"1":10,"2":13,"3":9},"p":{"1":0.333333333,"2":0.333333333,"3":0.333333333},"eval_loss'
    '":{"1":3.194281101,"2":3.195634604,"3":3.200950146}},{"samples":{"1":8,"2":12,"3":12},"p":{"1":0.331549804,"2"'
    ':0.332448527,"3":0.336001669},"eval_loss":{"1":2.87876606,"2":2.880353212,"3":2.886523724}},{"samples":{"1":6,'
    '"2":12,"3":14},"p":{"1":0.329470582,"2":0.33141401,"3":0.339115408},"eval_loss":{"1":2.748754978,"2":2.7500817'
    '78,"3":2.753990412}}],"stratified":[{"samples":{"1":10,"2":13,"3":9},"p":{"1":0.333333333,"2":0.333333333,"3":'
    '0.333333333},"eval_loss":{"1":3.194281101,"2":3.195634604,"3":3.200950146}},{"samples":{"1":8,"2":12,"3":12},"'
    'p":{"1":0.333333333,"2":0.333333333,"3":0.333333333},"eval_loss":{"1":2.87876606,"2":2.880353212,"3":2.8865237'
    '24}},{"samples":{"1":6,"2":12,"3":14},"p":{"1":0.333333333,"2":0.333333333,"3":0.333333333},"eval_loss":{"1":2'
    '.748754978,"2":2.750081778,"3":2.753990412}}]}'
)


@pytest.mark.parametrize("mixing", ["no_graph", "stratified"])
def test_other_mixers_run_as_before_probe_phases_existed(tmp_path, tokenizer, tiny_model, skills, make_config, mixing):
    args = make_config(mixing=mixing, rounds=3, max_steps=12, eta=2.0)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    assert trainer._unit == 4 and len(trainer.train_dataset) == 4 * 8, "a data unit is a round"
    trainer.train()
    trajectory = trainer.trajectory
    for record, before in zip(trajectory, BEFORE_PROBES[mixing], strict=True):
        assert "probes" not in record and "A" not in record
        assert record["samples"] == before["samples"]
        for key in ("p", "eval_loss"):
            np.testing.assert_allclose([record[key][s] for s in SKILLS], [before[key][s] for s in SKILLS], atol=1e-6)
    assert "next_p" in trajectory[0]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_aioli_has_equal_p_on_both_ranks_and_equals_one_process(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "scripts", "aioli_ddp_run.py")
    rank0, rank1 = run_two_ranks(script, str(tmp_path), output_dir=tmp_path)
    assert [rank0["world_size"], rank1["world_size"]] == [2, 2]
    assert rank0["p_history"] == rank1["p_history"], "every rank computes the same p, bit for bit"
    assert rank0["mixer"] == rank1["mixer"], "the same losses around the probes and the same A on every rank"
    subprocess.run([sys.executable, script, str(tmp_path), "--single"], env=SUBPROCESS_ENV, check=True, timeout=240)
    with open(tmp_path / "single.json") as f:
        single = json.load(f)
    trajectory = rank0["trajectory"]
    assert [r["samples"] for r in trajectory] == [r["samples"] for r in single["trajectory"]]
    assert [[p["samples"] for p in r["probes"]] for r in trajectory] == [
        [p["samples"] for p in r["probes"]] for r in single["trajectory"]
    ], "the probes' counts, summed over the ranks, are one process's"
    np.testing.assert_allclose(rank0["p_history"], single["p_history"], rtol=0, atol=1e-5)
    assert rank0["p_history"][0] != rank0["p_history"][1], "the mixture moved"


def test_aioli_from_the_cli_and_a_recipe_plots_the_learned_law(tmp_path, capsys):
    """`hf-skillit train RECIPE --set training.mixing=aioli`: no graph is needed (the recipe's is ignored), the
    trajectory holds each round's probes and A, and the run directory gets the plot of A per round; `--dry-run
    --measure` says that Aioli's mixtures come from training, instead of replaying an update that has no probes."""
    import torch

    from hf_skillit.cli import main
    from hf_skillit.rundir import MIXING_LAW_PNG

    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "lego_pretrain.yaml")
    run_dir = tmp_path / "run"
    settings = ["training.mixing=aioli", "training.eta=1.0", "training.aioli_probe_steps=1", "training.max_steps=8"]
    settings += ["training.rounds=2", "training.save_steps=4", "data.num_train_samples=200"]
    settings += ["data.validation_per_skill=8", "model.tiny.hidden_size=32", f"training.output_dir={run_dir}"]
    threads = torch.get_num_threads()
    try:
        assert main(["train", recipe, "--set", *settings]) == 0
        dry = [*settings[:-1], f"training.output_dir={tmp_path / 'dry'}"]
        assert main(["train", recipe, "--dry-run", "--measure", "--measure-rows", "4", "--set", *dry]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "mixing 'aioli' sets each round's p from its probe phases: nothing to replay here." in out
    with open(run_dir / "skillit_trajectory.jsonl") as f:
        rounds = [json.loads(line) for line in f]
    assert [r["global_step"] for r in rounds] == [4, 8]
    assert [len(r["probes"]) for r in rounds] == [3, 3] and all(set(r["A"]) == set(r["p"]) for r in rounds)
    assert (run_dir / MIXING_LAW_PNG).is_file()


def test_epoch_strategies_are_said_to_act_every_data_unit(tokenizer, tiny_model, skills, make_config, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="hf_skillit.probing"):
        trainer = SkillItTrainer(
            model=tiny_model(),
            args=make_config(**AIOLI, save_strategy="epoch"),
            skills=skills,
            processing_class=tokenizer,
        )
    assert trainer._unit == 2
    assert "save_strategy='epoch' acts at every data unit of 2 steps" in caplog.text
