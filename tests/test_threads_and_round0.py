"""`SkillItConfig.single_thread_max_params` (one torch thread for small CPU models, Python API and CLI alike) and
`evaluate_skills_before_training` (the trajectory's round-0 losses, which change nothing else)."""

from __future__ import annotations

import pytest
import torch
from conftest import skillit_config

from hf_skillit import SkillItTrainer, SkillsGraph

GRAPH = SkillsGraph([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]], ["1", "2", "3"])


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _trainer(tiny_model, skills, make_config, tokenizer, **overrides):
    args = make_config(max_steps=4, rounds=2, **overrides)
    return SkillItTrainer(model=tiny_model(), args=args, skills=skills, graph=GRAPH, processing_class=tokenizer)


def test_small_model_gets_one_thread(two_threads, tiny_model, skills, make_config, tokenizer):
    _trainer(tiny_model, skills, make_config, tokenizer)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("limit", [None, 1000])  # rule off; a limit below the tiny model's size
def test_rule_off_or_model_too_large_keeps_threads(two_threads, tiny_model, skills, make_config, tokenizer, limit):
    _trainer(tiny_model, skills, make_config, tokenizer, single_thread_max_params=limit)
    assert torch.get_num_threads() == 2


def test_omp_num_threads_wins(two_threads, monkeypatch, tiny_model, skills, make_config, tokenizer):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    _trainer(tiny_model, skills, make_config, tokenizer)
    assert torch.get_num_threads() == 2


def test_negative_limit_refused(make_config):
    with pytest.raises(ValueError, match="single_thread_max_params must be >= 0"):
        make_config(max_steps=4, rounds=2, single_thread_max_params=-1)


def test_round_zero_losses_are_recorded_and_change_nothing(tiny_model, skills, tokenizer, tmp_path):
    def trainer(name, **overrides):
        args = skillit_config(tmp_path / name, max_steps=4, rounds=2, **overrides)
        return SkillItTrainer(model=tiny_model(), args=args, skills=skills, graph=GRAPH, processing_class=tokenizer)

    expected = trainer("probe").evaluate_skills()  # the same untrained model
    runs = {}
    for before in (True, False):
        run = trainer(str(before), evaluate_skills_before_training=before)
        run.train()
        runs[before] = run.trajectory
    with_round0, without = runs[True], runs[False]
    assert with_round0[0]["initial_eval_loss"] == pytest.approx(expected)
    assert "initial_eval_loss" not in without[0] and all("initial_eval_loss" not in r for r in with_round0[1:])
    # The same mixtures, samples and losses: the evaluation before training feeds no mixer and draws no randomness.
    for a, b in zip(with_round0, without, strict=True):
        assert a["p"] == b["p"] and a["samples"] == b["samples"]
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-6)


class EvaluationRecorder:
    """Records, at the first forward of each evaluation (model in eval mode), the step, the model's class and whether
    autocast is on inside the forward (seen from the LM head, which runs inside the forward accelerate wraps)."""

    def __init__(self, model):
        self.model, self.trainer, self.seen = model, None, []
        model.get_output_embeddings().register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        if self.model.training:
            return
        step = self.trainer.state.global_step
        if not self.seen or self.seen[-1]["step"] != step:
            autocast = torch.is_autocast_enabled("cpu")
            self.seen.append({"step": step, "class": type(self.model).__name__, "autocast": autocast})


def test_round_zero_is_measured_inside_the_loop_under_the_training_autocast(tiny_model, skills, tokenizer, tmp_path):
    """With bf16 on CPU, accelerate wraps the model's forward in autocast when the Trainer prepares it. Round 0 used to
    be scored before that (float32), every later round under bf16; now all of them are scored the same way."""
    model = tiny_model()
    recorder = EvaluationRecorder(model)
    args = skillit_config(tmp_path, max_steps=4, rounds=2, bf16=True)
    trainer = SkillItTrainer(model=model, args=args, skills=skills, graph=GRAPH, processing_class=tokenizer)
    recorder.trainer = trainer
    trainer.train()
    assert [s["step"] for s in recorder.seen] == [0, 2, 4]
    assert all(s["autocast"] for s in recorder.seen), recorder.seen
    assert trainer.trajectory[0]["initial_eval_loss"].keys() == {"1", "2", "3"}
