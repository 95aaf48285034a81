"""Reliability: faults survived, bad inputs refused, nothing lost.

- Runs SIGKILLed at seeded-random points (mid-step, inside a round-boundary evaluation, while a checkpoint or the
  trajectory is written) resume from the last complete checkpoint with the uninterrupted run's p trajectory,
  per-skill counts, losses and data order (tests/scripts/crash_run.py).
- Under torchrun, a rank that dies or hangs makes the whole job fail within `ddp_timeout`, not hang.
- `learn_graph` killed mid-run resumes without training finished runs again; its files are never half-written.
- A NaN or inf validation loss keeps the last mixture, warns naming the skill, and training goes on.
- Every bad input of docs/reliability.md is refused before the first training step, naming the thing at fault.
- Same seed, same run; another seed or data_seed, another data order.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from conftest import lego_skills

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph, last_complete_checkpoint
from hf_skillit.recipes import RecipeError, load_recipe
from hf_skillit.trainer import TRAJECTORY_NAME

SCRIPTS = Path(__file__).parent / "scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SKILLS = ["1", "2", "3"]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crash_run = _load_script("crash_run")
crash_learn_graph = _load_script("crash_learn_graph")
STEPS_PER_ROUND = crash_run.MAX_STEPS // crash_run.ROUNDS
ACCUMULATION = 2  # crash_run's gradient_accumulation_steps: a row file line is one micro-batch


def read_jsonl(path: str | os.PathLike) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_scripts(*command: str, timeout: float = 300) -> None:
    done = subprocess.run([sys.executable, *command], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    """crash_run's run, uninterrupted, in this process: its directory, trajectory and row ids per micro-batch."""
    root = tmp_path_factory.mktemp("reference")
    trainer = crash_run.build_trainer(str(root / "run"), str(root / "rows.jsonl"))
    trainer.train()
    return {"dir": root / "run", "trajectory": trainer.trajectory, "rows": read_jsonl(root / "rows.jsonl")}


# ----- SIGKILL, then resume ------------------------------------------------------------------------------------------

_rng = random.Random(230714430)
_checkpoints = list(range(2 * crash_run.SAVE_STEPS, crash_run.MAX_STEPS + 1, crash_run.SAVE_STEPS))
KILLS = {
    # After the first checkpoint, so that there is one to resume from.
    "forward": f"forward:{_rng.randint(crash_run.SAVE_STEPS * ACCUMULATION + 1, crash_run.MAX_STEPS * ACCUMULATION)}",
    "eval": f"eval:{_rng.randint(1, crash_run.ROUNDS)}",
    "save": f"save:{_rng.choice(_checkpoints)}",
    "save_partial": f"save_partial:{_rng.choice(_checkpoints)}",
    "trajectory": f"trajectory:{_rng.randint(1, crash_run.ROUNDS)}",
}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> Path:
    """One process per kill point (forked from a single interpreter by crash_run.py), each SIGKILLed."""
    root = tmp_path_factory.mktemp("killed")
    run_scripts(str(SCRIPTS / "crash_run.py"), str(root), *(f"--kill={kill}" for kill in KILLS.values()))
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [pytest.param(point, id=kill) for point, kill in KILLS.items()],
)
def test_sigkilled_run_resumes_the_uninterrupted_run(killed_runs, reference, point):
    kill = KILLS[point]
    n = int(kill.partition(":")[2])
    name = kill.replace(":", "-")
    out = killed_runs / name
    assert json.loads((killed_runs / f"{name}.status").read_text()) == {"signal": signal.SIGKILL}, "not killed"
    killed_rows = read_jsonl(killed_runs / f"{name}.rows.jsonl")
    assert killed_rows == reference["rows"][: len(killed_rows)], "the killed run trained on other data"

    checkpoint = last_complete_checkpoint(str(out))
    assert checkpoint is not None
    step = int(checkpoint.rpartition("-")[2])
    if point.startswith("save"):
        assert (out / f"checkpoint-{n}" / "skillit_state.json").is_file(), "the kill landed before skillit_state"
        assert step == n - crash_run.SAVE_STEPS, "the half-written checkpoint must be skipped"
    if point == "eval":
        assert all(record["round"] < n for record in read_jsonl(out / TRAJECTORY_NAME)), "round n never ended"

    rows = killed_runs / f"{name}.resumed.jsonl"
    trainer = crash_run.build_trainer(str(out), str(rows))
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == crash_run.MAX_STEPS
    # The resumed round is read again from its start; its batches trained before the checkpoint are dropped.
    round_start = step // STEPS_PER_ROUND * STEPS_PER_ROUND
    assert read_jsonl(rows) == reference["rows"][round_start * ACCUMULATION :]
    # Same p, counts and (bit-identical) losses in every round.
    assert trainer.trajectory == reference["trajectory"]


# ----- a rank that dies or hangs under torchrun -------------------------------------------------------------------

DDP_TIMEOUT = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(process: subprocess.Popen) -> None:
    # torchrun starts each rank in its own session: kill the ranks one by one, then torchrun.
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.communicate()


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "fault",
    [
        "dies",
        "hangs",
    ],
)
def test_rank_fault_fails_the_job_within_ddp_timeout(tmp_path, fault):
    """Rank 1 is SIGKILLed (or hangs) mid-step: torchrun must exit non-zero within ddp_timeout of the fault."""
    stamp, log = tmp_path / "fault_time", tmp_path / "torchrun.log"
    env = {**ENV, "CRASH_STAMP": str(stamp), **({"CRASH_HANG": "1"} if fault == "hangs" else {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    script = [str(SCRIPTS / "crash_run.py"), str(tmp_path / "run"), f"--rows={tmp_path}/rows-{{rank}}.jsonl"]
    kill = f"forward:{random.Random(7).randint(3, 2 * crash_run.MAX_STEPS - 3)}"
    with open(log, "w") as output:  # a file, not a pipe: nobody reads while the test waits
        process = subprocess.Popen(
            [*command, *script, f"--kill={kill}", "--rank=1", f"--ddp-timeout={DDP_TIMEOUT}"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 180
        while not stamp.is_file() and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert stamp.is_file(), f"rank 1 never reached {kill}:\n{log.read_text()[-3000:]}"
        fault_time = float(stamp.read_text())
        try:
            process.wait(timeout=max(0.0, fault_time + DDP_TIMEOUT + 20 - time.time()))
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the job still runs {DDP_TIMEOUT + 20} s after rank 1 {fault}, with ddp_timeout={DDP_TIMEOUT}"
            )
    finally:
        if process.poll() is None:
            _kill_tree(process)
    text = log.read_text()
    assert process.returncode != 0
    if fault == "dies":
        # torchrun names the rank at fault; rank 0 stops on its own error (gloo: the peer is gone).
        assert "rank      : 1 (local_rank: 1)\n  exitcode  : -9" in text and "SIGKILL" in text, text[-3000:]
        assert "[rank0]: RuntimeError" in text, text[-3000:]
    else:
        # gloo words it "Timed out waiting 5000ms for recv" or "Application timeout caused pair closure".
        assert re.search(r"\[rank0\]: RuntimeError: .*(?i:timed out|timeout)", text), text[-3000:]


# ----- learn_graph killed ---------------------------------------------------------------------------------------------

_PLAN = ["single-0", "single-1", "pair-0-1"]  # crash_learn_graph's runs, in training order
GRAPH_KILLS = {"train": f"train:{random.Random(3).randint(2, 3)}", "run_file": "run_file:2", "graph": "graph"}


@pytest.fixture(scope="module")
def killed_learn_graph(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learn_graph")
    run_scripts(str(SCRIPTS / "crash_learn_graph.py"), str(root), *GRAPH_KILLS.values())
    return root


@pytest.mark.slow
@pytest.mark.parametrize("point", ["train", "run_file"], ids=[GRAPH_KILLS["train"], GRAPH_KILLS["run_file"]])
def test_learn_graph_killed_mid_run_resumes_without_redoing_runs(killed_learn_graph, point):
    from hf_skillit.graph_learning import merge_runs

    kill = GRAPH_KILLS[point]
    out = killed_learn_graph / kill.replace(":", "-")
    assert json.loads((out.parent / f"{out.name}.status").read_text()) == {"signal": signal.SIGKILL}
    killed_run = int(kill.partition(":")[2])
    finished = {f"{run}.json" for run in _PLAN[: killed_run - 1]}
    assert {p.name for p in (out / "runs").glob("*.json")} == finished
    for path in (out / "runs").glob("*.json"):
        json.loads(path.read_text())  # every run file there is whole
    stamps = {name: os.stat(out / "runs" / name).st_mtime_ns for name in finished}
    with pytest.raises(ValueError, match="runs are not finished"):
        merge_runs(out)

    init = crash_learn_graph.CountingInit()
    graph = crash_learn_graph.learn(str(out), model_init=init)
    assert init.calls == len(_PLAN) - len(finished)
    assert {name: os.stat(out / "runs" / name).st_mtime_ns for name in finished} == stamps
    uninterrupted = json.loads((killed_learn_graph / "graph" / "measurements.json").read_text())
    np.testing.assert_array_equal(graph.matrix, uninterrupted["delta_pair"])


@pytest.mark.slow
def test_graph_file_survives_a_kill_while_it_is_replaced(killed_learn_graph):
    from hf_skillit.graph_learning import merge_runs

    out = killed_learn_graph / "graph"
    assert json.loads((killed_learn_graph / "graph.status").read_text()) == {"signal": signal.SIGKILL}
    assert list(out.glob(".graph.json.*.tmp")), "the kill landed after the new graph was written aside"
    before = SkillsGraph.load(out / "graph.json")  # the previous graph, whole
    assert before.metadata["edge_rule"] == "delta"
    assert merge_runs(out, edge_rule="positive").metadata["edge_rule"] == "positive"
    init = crash_learn_graph.CountingInit()
    assert crash_learn_graph.learn(str(out), model_init=init) is not None
    assert init.calls == 0, "every run was finished"


# ----- non-finite validation losses -----------------------------------------------------------------------------------


def small_config(output_dir: Path, **overrides) -> SkillItConfig:
    args = dict(
        output_dir=str(output_dir),
        max_steps=6,
        rounds=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1000,
        seed=0,
    )
    args.update(overrides)
    return SkillItConfig(**args)


@pytest.fixture(scope="module")
def small_skills(tokenizer) -> SkillSet:
    return lego_skills(tokenizer, {s: 30 for s in SKILLS}, validation=4)


class Scripted:
    """A `SkillEvaluator` giving skill `probe` a scripted value per round."""

    skills = ("probe",)

    def __init__(self, values: dict[int, float]):
        self.values = values

    def __call__(self, trainer: SkillItTrainer) -> dict[str, float]:
        return {"probe": self.values[trainer.state.global_step // trainer.args.steps_per_round]}


def test_skill_without_scored_tokens_keeps_the_mixture(tmp_path, tokenizer, tiny_model, small_skills, caplog):
    """Skill 3's validation rows score no token (labels all -100): its loss is NaN every round."""
    validation = {s: small_skills.validation(s) for s in SKILLS}
    validation["3"] = validation["3"].map(lambda row: {"labels": [-100] * len(row["labels"])})
    skills = SkillSet({s: small_skills.train(s) for s in SKILLS}, validation)
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=small_config(tmp_path, mixing="no_graph"),
        skills=skills,
        processing_class=tokenizer,
    )
    with pytest.warns(RuntimeWarning, match=r"non-finite validation losses \{'3': nan\}"):
        trainer.train()
    assert trainer.state.global_step == 6
    assert "'3': nan" in caplog.text
    for record in trainer.trajectory:
        assert math.isnan(record["eval_loss"]["3"]) and math.isfinite(record["eval_loss"]["1"])
        assert record["p"] == dict.fromkeys(SKILLS, 1 / 3), "p_1 is kept"


def test_non_finite_round_keeps_the_last_mixture(tmp_path, tokenizer, tiny_model, small_skills):
    graph = SkillsGraph(np.array([[1.0, 0, 0, 1.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]), SKILLS, [*SKILLS, "probe"])
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=small_config(tmp_path, max_steps=8, rounds=4, eta=1.0),
        skills=small_skills,
        graph=graph,
        evaluators=[Scripted({1: 3.0, 2: math.nan, 3: math.inf, 4: 3.0})],
        processing_class=tokenizer,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("'probe': nan" in m for m in messages) and any("'probe': inf" in m for m in messages), messages
    assert trainer.state.global_step == 8
    first, second, third, _ = trainer.trajectory
    assert first["next_p"] != first["p"], "a finite round updates p"
    assert second["next_p"] == second["p"] == first["next_p"], "a NaN round keeps the last p"
    assert third["next_p"] == third["p"] == first["next_p"], "an inf round keeps the last p"


# ----- determinism ----------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_run(tmp_path, reference):
    trainer = crash_run.build_trainer(str(tmp_path / "run"), str(tmp_path / "rows.jsonl"), save_strategy="no")
    trainer.train()
    assert trainer.trajectory == reference["trajectory"]  # p, per-skill counts and losses, bit for bit
    assert read_jsonl(tmp_path / "rows.jsonl") == reference["rows"]


@pytest.mark.parametrize(
    ("seed", "same"), [({}, True), ({"seed": 1}, False), ({"data_seed": 1}, False)], ids=["same", "seed", "data_seed"]
)
def test_another_seed_changes_the_data_order(tmp_path, reference, seed, same):
    """The first round alone (same p_1, same round size as the reference): only the seed can change its rows."""
    trainer = crash_run.build_trainer(
        str(tmp_path / "run"), str(tmp_path / "rows.jsonl"), save_strategy="no", max_steps=4, rounds=1, **seed
    )
    trainer.train()
    rows = read_jsonl(tmp_path / "rows.jsonl")
    assert len(rows) == STEPS_PER_ROUND * ACCUMULATION
    assert (rows == reference["rows"][: len(rows)]) is same


# ----- bad inputs -----------------------------------------------------------------------------------------------------


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
    pytest.param(
        Bad(
            lambda a: a.resume(ignore_data_skip=True),
            "is 2 steps into a round; resuming it with ignore_data_skip=True",
            prepare=lambda a: a.finished_run(keep=6),
        ),
        id="resume-mid-round-ignore-data-skip",
    ),
    pytest.param(
        Bad(lambda a: a.resume(rounds=2), "(?i)steps.per.round", prepare=lambda a: a.finished_run(keep=6)),
        id="resume-other-steps-per-round",
    ),
    pytest.param(
        Bad(
            lambda a: a.resume(per_device_train_batch_size=2),
            "(?i)batch",
            prepare=lambda a: a.finished_run(keep=6),
        ),
        id="resume-other-batch-size",
    ),
    pytest.param(
        Bad(lambda a: a.resume(data_seed=1), "(?i)seed", prepare=lambda a: a.finished_run(keep=6)),
        id="resume-other-data-seed",
    ),
    pytest.param(
        Bad(
            lambda a: load_recipe(None, ["training.learning_rat=0.1"], raw=a.recipe()),
            "unknown key 'learning_rat' in training; did you mean 'learning_rate'",
            error=RecipeError,
        ),
        id="recipe-typo",
    ),
    pytest.param(
        Bad(
            lambda a: load_recipe(None, raw=a.recipe(train_files={"a": str(a.tmp / "a.jsonl")})),
            r"data.train_files\['a'\]: '.*a.jsonl' not found",
            error=RecipeError,
        ),
        id="recipe-data-path-missing",
    ),
    pytest.param(
        Bad(
            lambda a: load_recipe(None, ["graph.path=graphs/none.json"], raw=a.recipe()),
            "graph.path: 'graphs/none.json' not found; learn it with `hf-skillit learn-graph",
            error=RecipeError,
        ),
        id="recipe-graph-missing",
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
