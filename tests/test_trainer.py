"""SkillItTrainer: real training steps on a tiny model built from config."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import StopAt, lego_skills, skillit_trainer
from conftest import skillit_config as config
from transformers import TrainerCallback

from hf_skillit import LMCollator, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.evaluation import per_skill_loss

SKILLS = ["1", "2", "3"]


class RecordingCollator(LMCollator):
    """Records the ids of the rows it batches (all of which are trained on: rounds are consumed whole)."""

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id)
        self.ids: list[tuple[str, int]] = []

    def __call__(self, features):
        # Validation batches carry model columns only; training rows keep theirs (remove_unused_columns=False).
        self.ids += [(f["skill"], f["id"]) for f in features if "id" in f]
        return super().__call__(features)


def chi_square(counts: np.ndarray, p: np.ndarray) -> float:
    expected = counts.sum() * p
    keep = expected > 0
    return float((((counts - expected) ** 2)[keep] / expected[keep]).sum())


def test_per_round_counts_follow_a_changing_schedule(tmp_path, tokenizer, tiny_model, skills):
    schedule = [
        {"1": 0.7, "2": 0.2, "3": 0.1},
        {"1": 0.1, "2": 0.1, "3": 0.8},
        {"1": 0.0, "2": 0.5, "3": 0.5},
        {"1": 1 / 3, "2": 1 / 3, "3": 1 / 3},
    ]
    args = config(
        tmp_path, mixing="fixed", fixed_weights=schedule, rounds=4, max_steps=160, per_device_train_batch_size=16
    )
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    trajectory = trainer.trajectory
    assert [r["round"] for r in trajectory] == [1, 2, 3, 4]
    assert [r["global_step"] for r in trajectory] == [40, 80, 120, 160]
    for record, weights in zip(trajectory, schedule, strict=True):
        p = np.array([weights[s] for s in SKILLS])
        counts = np.array([record["samples"][s] for s in SKILLS])
        assert counts.sum() == 40 * 16
        assert np.allclose([record["p"][s] for s in SKILLS], p)
        assert counts[p == 0].sum() == 0
        # chi-square critical value at p-value 0.001: 2 degrees of freedom, or 1 where one skill is off
        assert chi_square(counts, p) < (13.82 if (p > 0).all() else 10.83), (counts, p)
    # The logs carry the mixture and the losses for the Trainer's reporters.
    logged = [entry for entry in trainer.state.log_history if "skillit/p/1" in entry]
    assert [entry["step"] for entry in logged] == [40, 80, 120, 160]
    assert all(np.isfinite(entry[f"skillit/loss/{s}"]) for entry in logged for s in SKILLS)


def test_skill_it_moves_weight_towards_higher_loss_skills(tmp_path, tokenizer, tiny_model, skills):
    """No-graph ablation (identity A): p_{t+1} ∝ exp(eta * sum of the last w rounds' losses), by hand."""
    eta, window = 2.0, 2
    args = config(tmp_path, mixing="no_graph", eta=eta, window=window, rounds=3, max_steps=30)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    records = trainer.trajectory
    losses = [np.array([r["eval_loss"][s] for s in SKILLS]) for r in records]
    assert np.allclose([records[0]["p"][s] for s in SKILLS], 1 / 3)  # p_1 ∝ exp(eta * rowsum(I)): uniform
    for t, record in enumerate(records[:-1]):
        windowed = sum(losses[max(0, t - window + 1) : t + 1])
        expected = np.exp(eta * windowed) / np.exp(eta * windowed).sum()
        got = np.array([record["next_p"][s] for s in SKILLS])
        assert np.allclose(got, expected, atol=1e-12)
        assert np.argmax(got) == np.argmax(windowed), "more weight on the skill with the higher loss"
        assert np.allclose([records[t + 1]["p"][s] for s in SKILLS], got)


def test_graph_edges_move_weight_to_prerequisites(tmp_path, tokenizer, tiny_model, skills):
    """Only skill 3 is evaluated (fine-tuning); skill 1 has an edge into it, skill 2 none: 2 gets nothing extra."""
    graph = SkillsGraph(np.array([[1.0, 0, 0.5], [0, 1.0, 0], [0, 0, 1.0]]), SKILLS)
    args = config(tmp_path, mixing="skill_it", eta=1.0, rounds=2, max_steps=20, target_skills=["3"])
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, graph=graph, processing_class=tokenizer)
    trainer.train()
    first = trainer.trajectory[0]
    loss3 = first["eval_loss"]["3"]
    logits = np.array([0.5, 0.0, 1.0]) * loss3  # A[:, target] * L_target
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose([first["next_p"][s] for s in SKILLS], expected, atol=1e-12)


def test_no_skill_row_is_replayed_before_the_skill_is_used_up(tmp_path, tokenizer, tiny_model):
    sizes = {"1": 30, "2": 50, "3": 70}
    skills = lego_skills(tokenizer, sizes)
    collator = RecordingCollator(tokenizer.pad_token_id)
    args = config(tmp_path, mixing="stratified", rounds=3, max_steps=36, remove_unused_columns=False)
    trainer = SkillItTrainer(
        model=tiny_model(), args=args, skills=skills, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()
    assert len(collator.ids) == 36 * 8
    for skill, size in sizes.items():
        ids = [i for s, i in collator.ids if s == skill]
        assert len(ids) == sum(r["samples"][skill] for r in trainer.trajectory)
        for start in range(0, len(ids), size):
            epoch = ids[start : start + size]
            assert len(set(epoch)) == len(epoch), f"skill {skill} replayed a row before its epoch ended"
        assert len(ids) > size, "each skill wraps into a second epoch here"


@pytest.mark.parametrize("stop_step", [10, 7], ids=["round-boundary", "mid-round"])
def test_resume_continues_the_identical_trajectory(tmp_path, tokenizer, tiny_model, skills, stop_step):
    def run(output_dir, callbacks=(), resume=None):
        graph = SkillsGraph(np.array([[1.0, 0.5, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]]), SKILLS)
        settings = dict(rounds=4, max_steps=20, save_strategy="steps", save_steps=stop_step)
        trainer = skillit_trainer(output_dir, tokenizer, tiny_model(), skills, graph, callbacks, **settings)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    whole = run(tmp_path / "whole").trajectory
    interrupted = run(tmp_path / "cut", callbacks=[StopAt(stop_step)])
    assert interrupted.state.global_step == stop_step
    assert os.path.isfile(tmp_path / "cut" / f"checkpoint-{stop_step}" / "skillit_state.json")
    resumed = run(tmp_path / "cut", resume=True).trajectory
    assert [r["round"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed, strict=True):
        assert a["samples"] == b["samples"]
        assert a["global_step"] == b["global_step"]
        assert np.allclose(list(a["p"].values()), list(b["p"].values()), rtol=0, atol=1e-9)
        assert np.allclose(list(a["eval_loss"].values()), list(b["eval_loss"].values()), rtol=0, atol=1e-6)


def test_lora_model_trains_and_is_evaluated_per_skill(tmp_path, tokenizer, tiny_model, skills):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model(), LoraConfig(r=8, lora_alpha=16, target_modules=["query_key_value", "dense_h_to_4h"])
    )
    args = config(tmp_path, mixing="stratified", rounds=3, max_steps=45, learning_rate=1e-2)
    trainer = SkillItTrainer(model=model, args=args, skills=skills, processing_class=tokenizer)
    before = trainer.evaluate_skills()
    trainer.train()
    after = trainer.trajectory[-1]["eval_loss"]
    assert all(after[s] < before[s] - 0.1 for s in SKILLS), (before, after)
    assert model.training, "evaluation restores train mode"


def test_validation_loss_is_token_weighted_over_scored_positions(tokenizer, tiny_model, skills):
    """Each skill's loss is the mean over its answer tokens, not a mean of per-batch means."""
    import torch

    model = tiny_model()
    validation = {s: skills.validation(s) for s in SKILLS}
    losses = per_skill_loss(model, validation, LMCollator(tokenizer.pad_token_id), 5, torch.device("cpu"))
    for s in SKILLS:
        total, count = 0.0, 0
        for row in validation[s]:
            ids = torch.tensor([row["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            scored = labels != -100
            total += torch.nn.functional.cross_entropy(logits[scored], labels[scored], reduction="sum").item()
            count += int(scored.sum())
        assert losses[s] == pytest.approx(total / count, rel=1e-5)


def test_trajectory_file_and_output_dir_protection(tmp_path, tokenizer, tiny_model, skills):
    args = config(tmp_path, mixing="stratified", rounds=2, max_steps=4)
    SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer).train()
    with open(tmp_path / "skillit_trajectory.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert {"round", "global_step", "p", "eval_loss", "samples"} <= set(lines[0])
    again = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    with pytest.raises(ValueError, match="holds another run"):
        again.train()
    with pytest.raises(ValueError, match="no complete checkpoint"):
        again.train(resume_from_checkpoint=True)
    overwrite = config(tmp_path, mixing="stratified", rounds=2, max_steps=4, overwrite_output_dir=True)
    SkillItTrainer(model=tiny_model(), args=overwrite, skills=skills, processing_class=tokenizer).train()


def test_half_written_checkpoint_is_skipped(tmp_path, tokenizer, tiny_model, skills):
    args = config(tmp_path, mixing="stratified", rounds=2, max_steps=4, save_strategy="steps", save_steps=2)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    os.remove(tmp_path / "checkpoint-4" / "trainer_state.json")  # as if killed mid-write
    from hf_skillit import last_complete_checkpoint

    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(max_steps=10, rounds=3), "not a multiple of rounds=3"),
        (dict(max_steps=2, rounds=3), "more than max_steps"),
        (dict(max_steps=-1), "needs max_steps > 0"),
        (dict(eta=0.0), "eta must be"),
        (dict(window=0), "window must be"),
        (dict(mixing="greedy"), "not one of"),
        (dict(mixing="fixed"), "needs fixed_weights"),
        (dict(fixed_weights="{not json"), "not valid JSON"),
        (dict(auto_find_batch_size=True), "auto_find_batch_size"),
    ],
)
def test_config_errors(tmp_path, overrides, message):
    base = dict(max_steps=12, rounds=3)
    base.update(overrides)
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **base)


def test_trainer_input_errors(tmp_path, tokenizer, tiny_model, skills):
    args = config(tmp_path, max_steps=6, rounds=3)
    model = tiny_model()
    with pytest.raises(ValueError, match="needs a skills graph"):
        SkillItTrainer(model=model, args=args, skills=skills, processing_class=tokenizer)
    wrong = SkillsGraph(np.eye(3), ["1", "2", "4"])
    with pytest.raises(ValueError, match="not in the graph: 3.*without training data: 4"):
        SkillItTrainer(model=model, args=args, skills=skills, graph=wrong, processing_class=tokenizer)
    no_pad = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="no pad token"):
        SkillItTrainer(
            model=model, args=args, skills=skills, graph=SkillsGraph.identity(SKILLS), processing_class=no_pad
        )
    targeted = config(tmp_path, max_steps=6, rounds=3, target_skills=["7"])
    with pytest.raises(ValueError, match="7"):
        SkillItTrainer(
            model=model, args=targeted, skills=skills, graph=SkillsGraph.identity(SKILLS), processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="do not pass train_dataset"):
        SkillItTrainer(
            model=model, args=args, skills=skills, processing_class=tokenizer, train_dataset=skills.train("1")
        )


def test_plain_trainer_evaluation_still_works(tmp_path, tokenizer, tiny_model, skills):
    """eval_dataset / compute_metrics / callbacks pass through to transformers.Trainer unchanged."""
    seen = []

    class Seen(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            seen.append(metrics)

    def metrics(prediction):
        return {"rows": float(len(prediction.label_ids))}

    args = config(tmp_path, mixing="stratified", rounds=2, max_steps=4, eval_strategy="steps", eval_steps=2)
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=args,
        skills=skills,
        processing_class=tokenizer,
        eval_dataset=skills.validation("2").select_columns(["input_ids", "labels"]),
        compute_metrics=metrics,
        callbacks=[Seen()],
    )
    trainer.train()
    assert [m["eval_rows"] for m in seen] == [16.0, 16.0]
    assert all(np.isfinite(m["eval_loss"]) for m in seen)


def test_a_mixer_that_reads_no_losses_warns_without_validation_data(tmp_path, tokenizer, tiny_model, skills, caplog):
    # Stratified needs no losses, so data without validation rows trains; the run then measures nothing (eval_loss
    # is empty), and the user is told so instead of finding an empty summary at the end.
    train_only = SkillSet({name: skills.train(name) for name in skills.train_skills}, {})
    args = config(tmp_path, mixing="stratified", rounds=2, max_steps=4)
    with caplog.at_level("WARNING", logger="hf_skillit.trainer"):
        trainer = SkillItTrainer(model=tiny_model(), args=args, skills=train_only, processing_class=tokenizer)
    (warning,) = [r.getMessage() for r in caplog.records if "reads no validation losses" in r.getMessage()]
    assert warning.startswith("mixing='stratified' reads no validation losses and the run has no validation data")
    trainer.train()
    with open(tmp_path / "skillit_trajectory.jsonl") as f:
        assert [json.loads(line)["eval_loss"] for line in f] == [{}, {}]
    # With validation data, or with a mixer that reads losses (refused without validation data), no such warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_skillit.trainer"):
        SkillItTrainer(
            model=tiny_model(),
            args=config(tmp_path / "b", mixing="stratified", rounds=2, max_steps=4),
            skills=skills,
            processing_class=tokenizer,
        )
    assert not [r for r in caplog.records if "reads no validation losses" in r.getMessage()]


def test_overwritten_run_is_not_resumed(tmp_path, tokenizer, tiny_model, skills):
    """Overwriting a run removes its checkpoints with its trajectory: a crash of the new run, resumed with
    `resume_from_checkpoint=True`, must not continue the old run (same layout, so no other check would stop it)."""
    old = config(tmp_path, mixing="stratified", rounds=2, max_steps=4, save_strategy="steps", save_steps=2)
    SkillItTrainer(model=tiny_model(), args=old, skills=skills, processing_class=tokenizer).train()
    assert (tmp_path / "checkpoint-4").is_dir()
    (tmp_path / "notes.txt").write_text("the user's own file")
    new_args = dict(mixing="stratified", rounds=2, max_steps=4, save_strategy="steps", save_steps=2)
    new = config(tmp_path, **new_args, overwrite_output_dir=True)
    crashed = SkillItTrainer(
        model=tiny_model(), args=new, skills=skills, processing_class=tokenizer, callbacks=[StopAt(1)]
    )
    crashed.train()  # stops after step 1, before its first checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "old checkpoints and trajectory are gone"
    resume = config(tmp_path, **new_args)
    again = SkillItTrainer(model=tiny_model(), args=resume, skills=skills, processing_class=tokenizer)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        again.train(resume_from_checkpoint=True)
    # Without overwrite_output_dir, a directory holding only checkpoints (no round finished yet) is another run too.
    one_round = dict(new_args, rounds=1)
    SkillItTrainer(
        model=tiny_model(),
        args=config(tmp_path / "b", **one_round),
        skills=skills,
        processing_class=tokenizer,
        callbacks=[StopAt(2)],
    ).train()
    assert not (tmp_path / "b" / "skillit_trajectory.jsonl").exists() and (tmp_path / "b" / "checkpoint-2").is_dir()
    fresh = SkillItTrainer(
        model=tiny_model(), args=config(tmp_path / "b", **one_round), skills=skills, processing_class=tokenizer
    )
    with pytest.raises(ValueError, match="holds another run .checkpoint-2"):
        fresh.train()


# skillit_state.json of checkpoint-7 of a 4-round Skill-It run, as written by the code before `RoundState` (61c3cb1).
OLD_STATE = json.loads(
    '{"rounds_done": 1, "global_step": 7, "p_history": [[0.41922895160969764, 0.32649583579983665, 0.2542752125904656],'
    ' [0.5945519310764136, 0.2766492618200713, 0.128798807103515]], "mixer": {"mixer": "skill_it", "train_skills": '
    '["1", "2", "3"], "eval_skills": ["1", "2", "3"], "round": 1, "eta": 0.5, "window": 3, "reduce": "sum", '
    '"history": [[3.062840700149536, 3.065451145172119, 3.072906494140625]]}, "stream": {"positions": [[0, 12], '
    '[0, 16], [0, 12]]}, "round_counts": [9, 5, 2], "train_skills": ["1", "2", "3"], "layout": {"rounds": 4, '
    '"steps_per_round": 5, "samples_per_round": 40, "data_seed": 0}, "initial_eval_loss": {"1": 3.8747103214263916, '
    '"2": 3.873845100402832, "3": 3.8759419918060303}}'
)


@pytest.mark.parametrize("with_round0", [True, False], ids=["61c3cb1", "before-initial_eval_loss"])
def test_round_state_reads_the_previous_checkpoint_format(with_round0):
    from hf_skillit.checkpointing import RoundState

    state = dict(OLD_STATE) if with_round0 else {k: v for k, v in OLD_STATE.items() if k != "initial_eval_loss"}
    rounds = RoundState.from_dict(state)
    assert rounds.rounds_done == 1 and rounds.p.tolist() == state["p_history"][1]
    assert rounds.round_counts.tolist() == [9, 5, 2] and rounds.stream.positions[1].offset == 16
    owned = {k: state.get(k) for k in ("rounds_done", "p_history", "stream", "round_counts", "train_skills")}
    # The same format; `round_tokens` (trained tokens, added later) reads as 0 from a checkpoint that lacks it, and
    # the probe phases' entries (issue 25) as none: one data unit per round, nothing counted before its end.
    assert rounds.to_dict() == {
        **owned,
        "round_tokens": [0, 0, 0],
        "initial_eval_loss": state.get("initial_eval_loss"),
        **{"probes": [], "probe_records": [], "counted": [0, 0, 0], "counted_tokens": [0, 0, 0]},
    }
    # Every process but the main one starts the unfinished round's counts at 0 (they are summed across processes).
    assert RoundState.from_dict(state, with_counts=False).round_counts.tolist() == [0, 0, 0]


def test_round_counts_and_tokens_are_summed_across_processes_in_one_collective(
    tmp_path, tokenizer, tiny_model, skills, monkeypatch
):
    # A checkpoint and a round's end each sum the round's samples and tokens over the processes: one all-reduce of
    # both (issue 24 review), not one each. Two processes with the same counts, simulated by a reduce that doubles.
    args = config(tmp_path, mixing="stratified", rounds=2, max_steps=4)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.rounds.round_counts += torch.tensor([3, 1, 2])
    trainer.rounds.round_tokens += torch.tensor([30, 10, 20])
    reduced = []

    def reduce(tensor, reduction):
        reduced.append(tensor.tolist())
        return tensor * 2

    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    monkeypatch.setattr(trainer.accelerator, "reduce", reduce)
    state = trainer.skillit_state()
    assert reduced == [[[3, 1, 2], [30, 10, 20]]]
    assert (state["round_counts"], state["round_tokens"]) == ([6, 2, 4], [60, 20, 40])
