"""Bad input: every bad input of docs/reliability.md is refused before the first training step, naming the thing at
fault, with nothing written, no batch made and no weight changed."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reliability_support import SKILLS, crash_run, reference_fixture, small_config, small_lego_skills

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.recipes import RecipeError, load_recipe

reference = reference_fixture()


@pytest.fixture(scope="module")
def small_skills(tokenizer) -> SkillSet:
    return small_lego_skills(tokenizer)


class Attempt:
    """The means of a bad-input case: configs, trainers and runs writing to `out`, every model made recorded."""

    def __init__(self, tmp_path: Path, tokenizer, tiny_model, skills: SkillSet, reference: dict[str, Any]):
        self.tmp = tmp_path
        self.out = tmp_path / "run"
        self.rows = tmp_path / "rows.jsonl"  # every training batch would be recorded here
        self.tokenizer = tokenizer
        self.tiny_model = tiny_model
        self.skills = skills
        self.reference = reference
        self.models: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = []

    def config(self, **overrides) -> SkillItConfig:
        # A checkpoint at every step: a step taken would leave one.
        settings = dict(save_strategy="steps", save_steps=1, remove_unused_columns=False, **overrides)
        return small_config(self.out, **settings)

    def _watch(self, model: torch.nn.Module) -> None:
        self.models.append((model, {name: t.clone() for name, t in model.state_dict().items()}))

    def train(self, resume: bool | None = None, **kwargs) -> None:
        """A SkillItTrainer over the small LEGO skills with an identity graph, unless `kwargs` say otherwise."""
        model = self.tiny_model()
        self._watch(model)
        kwargs = {
            "args": self.config() if "args" not in kwargs else kwargs.pop("args"),
            "skills": self.skills,
            "graph": SkillsGraph.identity(SKILLS),
            "processing_class": self.tokenizer,
            "data_collator": crash_run.RecordingCollator(self.tokenizer.pad_token_id, str(self.rows)),
            **kwargs,
        }
        SkillItTrainer(model=model, **kwargs).train(resume_from_checkpoint=resume)

    def finished_run(self, keep: int | None = None) -> None:
        """A copy of crash_run's finished run in `out`; with `keep`, only that checkpoint is left."""
        shutil.copytree(self.reference["dir"], self.out)
        for checkpoint in self.out.glob("checkpoint-*"):
            if keep is not None and checkpoint.name != f"checkpoint-{keep}":
                shutil.rmtree(checkpoint)

    def resume(self, **overrides) -> None:
        """Resume the run in `out` with crash_run's settings, `overrides` changed."""
        trainer = crash_run.build_trainer(str(self.out), str(self.rows), **overrides)
        self._watch(trainer.model)
        trainer.train(resume_from_checkpoint=True)

    def files(self) -> dict[str, tuple[int, int]]:
        return {
            str(path.relative_to(self.out)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in self.out.rglob("*")
        }

    def recipe(self, **data) -> dict[str, Any]:
        return {
            "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
            "data": data or {"synthetic": "lego", "generator": {"k": 3}, "num_train_samples": 90},
            "training": {"output_dir": str(self.out), "max_steps": 6, "rounds": 3, "mixing": "stratified"},
        }


@dataclass
class Bad:
    act: Callable[[Attempt], Any]
    match: str
    error: type[Exception] = ValueError
    prepare: Callable[[Attempt], Any] | None = field(default=None)


def _train_skills(a: Attempt, names=SKILLS) -> dict:
    return {s: a.skills.train(s) for s in names}


def _validation(a: Attempt, names=SKILLS) -> dict:
    return {s: a.skills.validation(s) for s in names}


def _graph_file_with_nan(a: Attempt) -> None:
    matrix = np.eye(3).tolist()
    matrix[0][1] = math.nan
    (a.tmp / "graph.json").write_text(json.dumps({"train_skills": SKILLS, "matrix": matrix}))


def _target_without_prerequisites(a: Attempt, mixing: str) -> None:
    """Target 3 has validation data only, and no training skill has an edge into it."""
    graph = SkillsGraph(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]]), ["1", "2"], SKILLS)
    skills = SkillSet(_train_skills(a, ["1", "2"]), _validation(a))
    a.train(skills=skills, graph=graph, args=a.config(mixing=mixing, target_skills=["3"]))


def _text_skills(column: str) -> SkillSet:
    from datasets import Dataset

    return SkillSet({"1": Dataset.from_dict({column: ["a b c"] * 8})}, {})


def _no_pad_token(a: Attempt) -> None:
    tokenizer = a.tokenizer.__class__(tokenizer_object=a.tokenizer.backend_tokenizer)
    a.train(processing_class=tokenizer, data_collator=None)


def _resume_from_step_6(case_id: str, match: str, **overrides: Any):
    """Resume crash_run's run from checkpoint-6, 2 steps into round 2, with `overrides` changed."""
    return pytest.param(
        Bad(lambda a: a.resume(**overrides), match, prepare=lambda a: a.finished_run(keep=6)), id=case_id
    )


def _recipe_error(case_id: str, match: str, overrides: tuple[str, ...] = (), data: Callable | None = None):
    """Load the attempt's recipe (its `data:` section `data(attempt)` if given) with `overrides`: refused with
    `match`."""

    def act(a: Attempt) -> Any:
        return load_recipe(None, list(overrides), raw=a.recipe(**(data(a) if data else {})))

    return pytest.param(Bad(act, match, error=RecipeError), id=case_id)


# Every input error of docs/reliability.md, in its order.
BAD_INPUTS = [
    pytest.param(
        Bad(
            lambda a: SkillSet({**_train_skills(a), "2": a.skills.train("2").select([])}, {}),
            "skill '2' has no training rows",
        ),
        id="empty-training-skill",
    ),
    pytest.param(
        Bad(
            lambda a: SkillSet(_train_skills(a), {**_validation(a), "2": a.skills.validation("2").select([])}),
            "skill '2' has no validation rows",
        ),
        id="skill-without-validation-rows",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(skills=SkillSet(_train_skills(a), _validation(a, ["1", "2"]))),
            r"evaluation skill\(s\) '3' of the graph have no validation data",
        ),
        id="graph-column-without-validation-data",
    ),
    pytest.param(
        Bad(lambda a: a.train(graph=SkillsGraph(np.eye(2), SKILLS)), r"matrix has shape \(2, 2\) but there are 3"),
        id="graph-shape",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(graph=SkillsGraph(np.eye(3), ["1", "2", "4"])),
            "not in the graph: 3; in the graph but without training data: 4",
        ),
        id="graph-names",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(graph=None, args=a.config(graph_path=str(a.tmp / "graph.json"))),
            r"graph\.json': matrix entry for training skill '1' -> evaluation skill '2' is nan",
            prepare=_graph_file_with_nan,
        ),
        id="nan-in-graph",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(graph=None, args=a.config(graph_path=str(a.tmp / "nope.json"))),
            "skills graph file not found: .*nope.json",
            error=FileNotFoundError,
        ),
        id="graph-file-missing",
    ),
    pytest.param(
        Bad(lambda a: a.train(graph=None), "mixing='skill_it' needs a skills graph"), id="skill-it-without-graph"
    ),
    pytest.param(Bad(lambda a: a.config(eta=-0.5), r"eta must be a finite number > 0, got -0.5"), id="negative-eta"),
    pytest.param(Bad(lambda a: a.config(window=0), "window must be an integer >= 1, got 0"), id="window-zero"),
    pytest.param(
        Bad(lambda a: a.config(max_steps=4, rounds=8), "rounds=8 is more than max_steps=4"),
        id="rounds-more-than-max-steps",
    ),
    pytest.param(
        Bad(
            lambda a: a.config(max_steps=10, rounds=4),
            "max_steps=10 is not a multiple of rounds=4: .* use max_steps=8 or 12",
        ),
        id="rounds-not-dividing-max-steps",
    ),
    pytest.param(Bad(lambda a: a.config(max_steps=-1), "needs max_steps > 0"), id="no-max-steps"),
    pytest.param(Bad(lambda a: a.config(mixing="greedy"), "mixing='greedy' is not one of"), id="unknown-mixing"),
    pytest.param(
        Bad(
            lambda a: a.train(args=a.config(mixing="fixed", fixed_weights={"1": 1.0, "7": 1.0})),
            r"weights: unknown skills \['7'\]",
        ),
        id="fixed-weights-unknown-skill",
    ),
    pytest.param(
        Bad(lambda a: a.train(args=a.config(target_skills=["7"])), r"unknown evaluation skills \['7'\]"),
        id="unknown-target-skill",
    ),
    pytest.param(
        Bad(
            lambda a: _target_without_prerequisites(a, "stratified"),
            r"no training skill has a positive edge into the evaluation skills \['3'\]",
        ),
        id="target-without-prerequisites-or-data-stratified",
    ),
    pytest.param(
        Bad(lambda a: _target_without_prerequisites(a, "skill_it"), r"'3'"),
        id="target-without-prerequisites-or-data-skill-it",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(skills=_text_skills("content"), graph=None, args=a.config(mixing="random")),
            r"skill '1' \(train\) has neither `input_ids` nor a 'text' column to tokenize \(columns: content\)",
        ),
        id="missing-text-column",
    ),
    pytest.param(
        Bad(
            lambda a: a.train(
                skills=_text_skills("text"), graph=None, args=a.config(mixing="random"), processing_class=None
            ),
            r"skill '1' \(train\) holds raw text: pass processing_class=",
        ),
        id="raw-text-without-tokenizer",
    ),
    pytest.param(Bad(_no_pad_token, "the tokenizer .* has no pad token"), id="tokenizer-without-pad-token"),
    pytest.param(
        Bad(lambda a: a.train(train_dataset=a.skills.train("1")), "do not pass train_dataset="),
        id="train-dataset-passed",
    ),
    pytest.param(
        Bad(
            lambda a: a.config(dataloader_num_workers=1, dataloader_persistent_workers=True),
            "dataloader_persistent_workers=True is not supported",
        ),
        id="persistent-workers",
    ),
    pytest.param(
        Bad(lambda a: a.config(eval_samples_per_skill=0), "eval_samples_per_skill must be >= 1"),
        id="eval-samples-per-skill-zero",
    ),
    pytest.param(
        Bad(lambda a: a.train(), "holds another run", prepare=Attempt.finished_run), id="output-dir-holds-another-run"
    ),
    pytest.param(
        Bad(lambda a: a.train(resume=True), "no complete checkpoint to resume from"), id="resume-without-checkpoint"
    ),
    pytest.param(
        Bad(
            lambda a: a.train(
                skills=SkillSet(_train_skills(a, ["1", "2"]), _validation(a)),
                graph=SkillsGraph.identity(["1", "2"]),
                resume=True,
            ),
            r"was trained on skills \['1', '2', '3'\], not \['1', '2'\]",
            prepare=Attempt.finished_run,
        ),
        id="resume-other-skills",
    ),
    pytest.param(
        Bad(lambda a: a.resume(window=2), "window=3, this mixer has 2", prepare=Attempt.finished_run),
        id="resume-other-window",
    ),
    _resume_from_step_6(
        "resume-mid-round-ignore-data-skip",
        "is 2 steps into a round; resuming it with ignore_data_skip=True",
        ignore_data_skip=True,
    ),
    _resume_from_step_6("resume-other-steps-per-round", "(?i)steps.per.round", rounds=2),
    _resume_from_step_6("resume-other-batch-size", "(?i)batch", per_device_train_batch_size=2),
    _resume_from_step_6("resume-other-data-seed", "(?i)seed", data_seed=1),
    _recipe_error(
        "recipe-typo",
        "unknown key 'learning_rat' in training; did you mean 'learning_rate'",
        ("training.learning_rat=0.1",),
    ),
    _recipe_error(
        "recipe-data-path-missing",
        r"data.train_files\['a'\]: '.*a.jsonl' not found",
        data=lambda a: {"train_files": {"a": str(a.tmp / "a.jsonl")}},
    ),
    _recipe_error(
        "recipe-graph-missing",
        "graph.path: 'graphs/none.json' not found; learn it with `hf-skillit learn-graph",
        ("graph.path=graphs/none.json",),
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_before_training(case, tmp_path, tokenizer, tiny_model, small_skills, reference):
    attempt = Attempt(tmp_path, tokenizer, tiny_model, small_skills, reference)
    if case.prepare is not None:
        case.prepare(attempt)
    before = attempt.files()
    with pytest.raises(case.error, match=case.match):
        case.act(attempt)
    assert attempt.files() == before, "nothing is written to (or removed from) the output directory"
    assert not attempt.rows.exists(), "no training batch was made"
    for model, weights in attempt.models:
        assert all(torch.equal(t, weights[name]) for name, t in model.state_dict().items()), "weights changed"
