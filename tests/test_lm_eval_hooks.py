"""lm-eval tasks as evaluation skills (out-of-domain setting): local tasks, a tiny model, offline."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_two_ranks, skillit_config
from datasets import Dataset

from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet, SkillsGraph
from hf_skillit.graph_learning import learn_graph
from hf_skillit.lm_eval_hooks import LMEvalArguments, LMEvalCallback, LMEvalSkills
from hf_skillit.mixing import dry_run_mixture

LETTERS = "abcdefghijklmnopqrstuvwxyz"
LL_TASK, MC_TASK = "cycle_next", "noise_choice"


def write_task(root: Path, name: str, output_type: str, rows: list[dict], **extra: str) -> None:
    """A local lm-eval task: `name.yaml` reading `name.jsonl`."""
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fields = {
        "loglikelihood": {"doc_to_text": "{{context}}", "doc_to_target": "{{target}}"},
        "multiple_choice": {
            "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}",
        },
    }[output_type]
    metrics = ["acc"] if output_type == "loglikelihood" else ["acc", "acc_norm"]
    lines = [
        f"task: {name}",
        "dataset_path: json",
        f"dataset_kwargs: {{data_files: {{test: {data}}}}}",
        "test_split: test",
        f"output_type: {output_type}",
        *(f"{key}: {json.dumps(value)}" for key, value in {**fields, **extra}.items()),
        "metric_list:",
        *(f"  - metric: {m}" for m in metrics),
    ]
    (root / f"{name}.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """`cycle_next`: the next letter of the cycle "a b c d" (loglikelihood); `noise_choice`: a random letter among
    four (multiple_choice) that no training data makes predictable."""
    root = tmp_path_factory.mktemp("tasks")
    cycle = "a b c d".split()
    ll_rows = [
        {"context": " ".join(cycle[(s + i) % 4] for i in range(n)), "target": " " + cycle[(s + n) % 4]}
        for s in range(4)
        for n in (3, 5)
    ]
    rng = random.Random(0)
    mc_rows = []
    for _ in range(8):
        choices = rng.sample(LETTERS[4:], 4)
        mc_rows.append({"context": " ".join(rng.choices(LETTERS, k=4)), "choices": choices, "label": rng.randrange(4)})
    write_task(root, LL_TASK, "loglikelihood", ll_rows)
    write_task(root, MC_TASK, "multiple_choice", mc_rows)
    return root


@pytest.fixture(scope="module")
def lm_skills(task_dir) -> LMEvalSkills:
    return LMEvalSkills([LL_TASK, MC_TASK], include_path=task_dir, include_defaults=False, batch_size=16)


def text_sources(rows: int = 256) -> SkillSet:
    """`cycle`: "a b c d" repeated (teaches `cycle_next`); `noise`: random letters (teaches no task much)."""
    rng = random.Random(1)
    cycle = [" ".join("a b c d".split()[(s + i) % 4] for i in range(16)) for s in range(rows)]
    noise = [" ".join(rng.choices(LETTERS, k=16)) for _ in range(rows)]
    return SkillSet({"cycle": Dataset.from_dict({"text": cycle}), "noise": Dataset.from_dict({"text": noise})}, {})


def config(tmp_path, **overrides) -> SkillItConfig:
    """The shared test config with batches of 16 (validation: TrainingArguments' 8) and sequences cut at 16 tokens."""
    settings = dict(per_device_train_batch_size=16, per_device_eval_batch_size=8, max_length=16)
    return skillit_config(tmp_path, **{**settings, **overrides})


def manual_gold_nll(model, tokenizer, pairs: list[tuple[str, str]]) -> float:
    """Token-weighted NLL of each continuation after its context, from a plain forward pass."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for context, continuation in pairs:
            context_ids = tokenizer(context)["input_ids"]
            ids = tokenizer(context + continuation)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            for position in range(len(context_ids), len(ids)):
                nll -= logits[position - 1, ids[position]].item()
                count += 1
    return nll / count


def test_gold_nll_and_error_match_a_forward_pass(lm_skills, task_dir, tokenizer, tiny_model):
    model = tiny_model()
    model.train()
    metrics = lm_skills.evaluate(model, tokenizer)
    assert model.training, "the model's train mode must be restored"
    assert lm_skills.skills == (LL_TASK, MC_TASK)

    ll_rows = [json.loads(line) for line in (task_dir / f"{LL_TASK}.jsonl").read_text().splitlines()]
    mc_rows = [json.loads(line) for line in (task_dir / f"{MC_TASK}.jsonl").read_text().splitlines()]
    model.eval()
    expected_ll = manual_gold_nll(model, tokenizer, [(r["context"], r["target"]) for r in ll_rows])
    # multiple_choice scores each choice after target_delimiter " ".
    expected_mc = manual_gold_nll(model, tokenizer, [(r["context"], " " + r["choices"][r["label"]]) for r in mc_rows])
    assert metrics[LL_TASK]["nll"] == pytest.approx(expected_ll, rel=1e-5)
    assert metrics[MC_TASK]["nll"] == pytest.approx(expected_mc, rel=1e-5)
    assert set(metrics[MC_TASK]) >= {"acc", "acc_norm", "nll"}

    error = LMEvalSkills([MC_TASK], include_path=task_dir, include_defaults=False, metric="error_norm", limit=4)
    assert error.scalar(metrics[MC_TASK]) == pytest.approx(1 - metrics[MC_TASK]["acc_norm"])
    assert len(error.evaluate(model, tokenizer)[MC_TASK]) >= 3


def test_ood_mixture_moves_to_sources_that_help_high_loss_tasks(lm_skills, tmp_path, tokenizer, tiny_model):
    """A k x m graph onto lm-eval tasks: after round 1 the cycle task is learned and the noise task is not, so the
    next mixture favours `noise`, the source whose graph row points at the high-loss task."""
    graph = SkillsGraph(np.eye(2), ["cycle", "noise"], [LL_TASK, MC_TASK])
    eta = 1.0
    args = config(tmp_path, mixing="skill_it", eta=eta, window=1, rounds=2, max_steps=80)
    trainer = SkillItTrainer(
        model=tiny_model(),
        args=args,
        skills=text_sources(),
        graph=graph,
        evaluators=[lm_skills],
        processing_class=tokenizer,
    )
    trainer.add_callback(LMEvalCallback(trainer, lm_skills))
    trainer.train()

    first = trainer.trajectory[0]
    losses = first["eval_loss"]
    assert set(losses) == {LL_TASK, MC_TASK}
    assert losses[LL_TASK] < 0.5 * losses[MC_TASK]
    logits = eta * graph.matrix @ np.array([losses[LL_TASK], losses[MC_TASK]])
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [first["next_p"][s] for s in ("cycle", "noise")] == pytest.approx(expected.tolist())
    assert first["next_p"]["noise"] > first["p"]["noise"]
    assert trainer.model.training

    final = trainer.state.log_history[-1]
    assert {f"lm_eval/{LL_TASK}/nll", f"lm_eval/{LL_TASK}/acc", f"lm_eval/{MC_TASK}/acc_norm"} <= set(final)
    assert final[f"lm_eval/{LL_TASK}/nll"] == pytest.approx(trainer.trajectory[-1]["eval_loss"][LL_TASK])


def test_algorithm_3_learns_a_graph_onto_lm_eval_tasks(lm_skills, tmp_path, tokenizer, tiny_model):
    graph = learn_graph(
        skills=text_sources(),
        model_init=tiny_model,
        output_dir=tmp_path / "graph",
        steps=30,
        method="approximate",
        evaluators=[lm_skills],
        args={"per_device_train_batch_size": 16, "learning_rate": 3e-3, "max_length": 16, "report_to": "none"},
        processing_class=tokenizer,
    )
    assert graph.shape == (2, 2)
    assert graph.train_skills == ("cycle", "noise") and graph.eval_skills == (LL_TASK, MC_TASK)
    assert np.isfinite(graph.matrix).all()
    # Training on the cycle lowers the cycle task's loss more than training on noise does.
    assert graph.matrix[0, 0] > graph.matrix[1, 0]


def test_unknown_task_names_close_matches(task_dir):
    with pytest.raises(ValueError, match=r"unknown lm-eval task 'cycle_nxt'.*close matches: cycle_next"):
        LMEvalSkills(["cycle_nxt"], include_path=task_dir, include_defaults=False)
    with pytest.raises(FileNotFoundError, match="include_path not found"):
        LMEvalSkills([LL_TASK], include_path=task_dir / "missing")


@pytest.mark.parametrize(
    ("output_type", "row", "extra", "message"),
    [
        ("loglikelihood", {"context": "a b c", "target": "d"}, {}, r"row 1: .*merged word 'cd'.*leading space"),
        (
            "multiple_choice",
            {"context": "a b c", "choices": ["d", "e"], "label": 0},
            {"target_delimiter": ""},
            r"row 1: .*merged word 'cd'.*target_delimiter",
        ),
        ("multiple_choice", {"context": "a b c", "choices": ["d", "e"], "label": 5}, {}, r"row 1: .*gold label"),
    ],
)
def test_unscorable_rows_are_rejected_with_task_and_row(tmp_path, output_type, row, extra, message):
    # A first row that scores fine (lm-eval inspects row 0 when it loads the task).
    good = (
        {"context": "a b c", "target": " d"}
        if output_type == "loglikelihood"
        else {**row, "context": "a b ", "label": 0}
    )
    write_task(tmp_path, "broken", output_type, [good, row], **extra)
    with pytest.raises(ValueError, match=r"lm-eval task 'broken', " + message):
        LMEvalSkills(["broken"], include_path=tmp_path, include_defaults=False)


def test_recipe_section_builds_the_skills_and_the_callback(task_dir):
    section = LMEvalArguments(tasks=[LL_TASK], include_path=str(task_dir), include_defaults=False, limit=2)
    skills = section.skills()
    assert skills.skills == (LL_TASK,) and skills.limit == 2
    assert section.callback(trainer=None, skills=skills).at_train_end
    assert LMEvalArguments(tasks=[LL_TASK], log_at_train_end=False).callback(None, skills) is None
    with pytest.raises(ValueError, match="lm_eval.metric must be one of"):
        LMEvalArguments(tasks=[LL_TASK], metric="accuracy")


def test_unsupported_output_type_and_metric(tmp_path, task_dir):
    with pytest.raises(ValueError, match="metric must be one of"):
        LMEvalSkills([LL_TASK], include_path=task_dir, include_defaults=False, metric="acc")
    with pytest.raises(ValueError, match="needs lm-eval task 'cycle_next' to report 'acc_norm'"):
        LMEvalSkills([LL_TASK], include_path=task_dir, include_defaults=False, metric="error_norm")
    (tmp_path / "gen.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    (tmp_path / "gen.yaml").write_text(
        f"task: gen\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {tmp_path / 'gen.jsonl'}}}}}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
    )
    with pytest.raises(ValueError, match="output_type 'generate_until'"):
        LMEvalSkills(["gen"], include_path=tmp_path, include_defaults=False)


def test_dry_run_mixture_reproduces_figure_7():
    """Row sums of ln(p) / 100 give back the paper's RedPajama mixture at eta = 100 (Figure 7, right)."""
    figure_7 = {
        "arxiv": 0.1370,
        "books": 0.0437,
        "c4": 0.4195,
        "common_crawl": 0.0732,
        "github": 0.189,
        "stackexchange": 0.0892,
        "wikipedia": 0.0484,
    }
    row_sums = np.log(list(figure_7.values())) / 100
    tasks = ["arc_easy", "boolq"]
    graph = SkillsGraph(np.stack([row_sums / 2, row_sums / 2], axis=1), list(figure_7), tasks)
    table = dry_run_mixture(graph, eta=100, header="RedPajama source")
    lines = table.splitlines()
    assert lines[0].split() == ["RedPajama", "source", "Skill-It", "mixture"]
    parsed = {line.split()[0]: float(line.split()[1]) for line in lines[2:]}
    total = sum(figure_7.values())
    assert parsed == pytest.approx({k: v / total for k, v in figure_7.items()}, abs=1e-4)
    assert math.isclose(sum(parsed.values()), 1.0, abs_tol=1e-3)


def test_continuation_without_tokens_is_reported_before_scoring(tmp_path, tokenizer, tiny_model):
    # A lone space passes the text checks, but the word-level tokenizer gives it no token to score.
    write_task(
        tmp_path, "blank", "loglikelihood", [{"context": "a b", "target": " c"}, {"context": "a b", "target": " "}]
    )
    skills = LMEvalSkills(["blank"], include_path=tmp_path, include_defaults=False)
    model = tiny_model()
    with pytest.raises(ValueError, match=r"lm-eval task 'blank', row 1: the continuation ' ' tokenizes to no tokens"):
        skills.evaluate(model, tokenizer)
    assert model.training


DDP_SCRIPT = """
import json, os, sys
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from conftest import finish_rank
from test_lm_eval_hooks import LL_TASK, MC_TASK, config, text_sources
from hf_skillit import SkillItTrainer, SkillsGraph
from hf_skillit.lm_eval_hooks import LMEvalCallback, LMEvalSkills
from hf_skillit.synthetic import build_tokenizer, make_tiny_model, tiny_model_config

out = {out!r}
tokenizer = build_tokenizer()
model = make_tiny_model(tiny_model_config(tokenizer=tokenizer, hidden_size=32, num_layers=1, num_heads=2))
skills = LMEvalSkills([LL_TASK, MC_TASK], include_path={tasks!r}, include_defaults=False)
graph = SkillsGraph(np.eye(2), ["cycle", "noise"], [LL_TASK, MC_TASK])
args = config(out, mixing="skill_it", rounds=2, max_steps=8, per_device_train_batch_size=4)
trainer = SkillItTrainer(model=model, args=args, skills=text_sources(64), graph=graph, evaluators=[skills],
                         processing_class=tokenizer)
trainer.add_callback(LMEvalCallback(trainer, skills))
trainer.train()
rank = trainer.accelerator.process_index

def fail(*args, **kwargs):
    raise KeyError("boom")

if rank == 0:
    skills.evaluate = fail
try:
    skills.evaluate_trainer(trainer)
    error = None
except Exception as err:
    error = f"{{type(err).__name__}}: {{err}}"
logs = [{{k: v for k, v in e.items() if k.startswith(("skillit/", "lm_eval/"))}} for e in trainer.state.log_history]
record = {{"world_size": trainer.accelerator.num_processes, "logs": logs, "training": trainer.model.training,
          "error": error}}
finish_rank(trainer, out, record)
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_get_the_main_process_results(tmp_path, task_dir):
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path), tasks=str(task_dir)))
    ranks = run_two_ranks(script, output_dir=tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["logs"] == ranks[1]["logs"], "every rank must get the same lm-eval results"
    assert any(f"lm_eval/{MC_TASK}/nll" in entry for entry in ranks[0]["logs"])
    assert all(r["training"] for r in ranks)
    # A failure on the main process is raised on every process instead of leaving the others waiting.
    assert ranks[0]["error"] == "KeyError: 'boom'"
    assert ranks[1]["error"] == "RuntimeError: lm-eval evaluation failed on the main process: KeyError: 'boom'"


def test_peft_model_is_scored_like_its_base(lm_skills, tokenizer, tiny_model):
    from peft import LoraConfig, get_peft_model

    base = lm_skills.evaluate(tiny_model(), tokenizer)
    # LoRA starts as the identity (B = 0), so the adapted model scores exactly as its base.
    peft_model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["query_key_value"]))
    peft_model.train()
    adapted = lm_skills.evaluate(peft_model, tokenizer)
    assert peft_model.training
    for task in (LL_TASK, MC_TASK):
        assert adapted[task]["nll"] == pytest.approx(base[task]["nll"], rel=1e-6)
