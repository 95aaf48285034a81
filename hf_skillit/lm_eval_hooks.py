"""Evaluation skills measured by lm-evaluation-harness tasks: the out-of-domain setting (paper §4.3).

The training skills are data sources; the evaluation skills are lm-eval tasks (built-in names, or local task
YAML found through `include_path`). [`LMEvalSkills`] is a `SkillEvaluator`: at each round boundary it scores
the live model on every task and hands Skill-It one number per task, lower is better:

- `metric="nll"` (default): per-token negative log-likelihood of the gold continuation (the target of a
  `loglikelihood` task, the correct choice of a `multiple_choice` task), token-weighted over the task's rows.
  lm-eval only returns summed log-probabilities; the token counts are those lm-eval scored (same tokenization).
- `metric="error"` / `"error_norm"`: 1 - lm-eval's `acc` / `acc_norm`.

lm-eval runs on the main process with the live model (a `PreTrainedModel` or a `peft` model) through
`HFLM(pretrained=model, ...)`, and the results are broadcast to every process; a model sharded with FSDP2 is
evaluated by every rank at once (see `LMEvalSkills.evaluate_trainer`). [`LMEvalCallback`] logs every
task's metrics through `Trainer.log` at the end of training. `hf_skillit.mixing.dry_run_mixture`
prints the static (T = 1) Skill-It mixture of a graph, as in the paper's Figure 7, without training.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from accelerate.utils import broadcast_object_list
from lm_eval.api.task import Task
from lm_eval.defaults import DEFAULT_OTHER_SEED
from lm_eval.evaluator import evaluate as lm_eval_evaluate
from lm_eval.evaluator_utils import get_sample_size
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

__all__ = ["LMEvalArguments", "LMEvalCallback", "LMEvalSkills", "METRICS", "load_lm_eval_tasks"]

METRICS = ("nll", "error", "error_norm")
SUPPORTED_OUTPUT_TYPES = ("loglikelihood", "multiple_choice")
# A word character on both sides of the context/continuation boundary: the tokenizer sees one merged word.
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")


def _task_manager(names: Sequence[str], include_path: list[str] | None, include_defaults: bool) -> TaskManager:
    """A TaskManager indexing `include_path`, and lm-eval's built-in tasks only when a name needs them
    (indexing the ~15k built-in tasks takes tens of seconds)."""
    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if not include_defaults or all(name in local.all_tasks or _is_yaml_file(name) for name in names):
            return local
    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _is_yaml_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) and os.path.isfile(spec)


def load_lm_eval_tasks(
    tasks: Sequence[str],
    include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    include_defaults: bool = True,
) -> dict[str, Task]:
    """Load lm-eval tasks by name (or YAML path), groups expanded to their leaf tasks, in the order given.

    Raises a `ValueError` naming close matches for an unknown name, and says what to download when a
    task's dataset cannot be loaded (no network here: datasets must be local or in the HF cache).
    """
    if isinstance(tasks, str) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of lm-eval task names, got {tasks!r}")
    paths = None
    if include_path is not None:
        given = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
        paths = [str(p) for p in given]
        if missing := [p for p in paths if not os.path.exists(p)]:
            raise FileNotFoundError(f"lm-eval include_path not found: {', '.join(missing)}")
    manager = _task_manager(tasks, paths, include_defaults)
    searched = " and ".join(
        part
        for part in ("lm-eval's built-in tasks" if include_defaults else "", ", ".join(paths) if paths else "")
        if part
    )
    for name in tasks:
        if name not in manager.all_tasks and not _is_yaml_file(name):
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown lm-eval task {name!r} (searched {searched or 'nothing'}){hint}")

    loaded: dict[str, Task] = {}
    for name in tasks:
        try:
            leaves = manager.load([name])["tasks"]
        except Exception as err:
            raise RuntimeError(
                f"could not load lm-eval task {name!r}: {type(err).__name__}: {err}. Built-in tasks read their "
                "dataset from the Hugging Face Hub: download it once with network access (e.g. `lm_eval --model hf "
                f"--model_args pretrained=gpt2 --tasks {name} --limit 1`) into the HF datasets cache, then run offline "
                "(HF_DATASETS_OFFLINE=1); local tasks: check dataset_kwargs.data_files in the task YAML"
            ) from err
        for leaf, task in leaves.items():
            if leaf in loaded:
                raise ValueError(f"lm-eval task {leaf!r} is requested twice (directly or through a group)")
            loaded[leaf] = task
    return loaded


def _gold_index(task: Task, doc: Mapping[str, Any]) -> int:
    """Which of the document's requests scores the gold continuation (lm-eval's own rule for the label)."""
    if task.OUTPUT_TYPE == "loglikelihood":
        return 0
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    choices = task.doc_to_choice(doc)
    if isinstance(gold, list):  # several correct answers: score the first
        gold = gold[0]
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -1
    return gold if isinstance(gold, int) and 0 <= gold < len(choices) else -1


def _merged_word(context: str, continuation: str) -> str | None:
    """The word the tokenizer would see across the boundary when nothing separates context and continuation."""
    if context and continuation and _WORD_CHAR.match(context[-1]) and _WORD_CHAR.match(continuation[0]):
        return context.split()[-1] + continuation.split()[0]
    return None


def _check_requests(name: str, task: Task, limit: int | None) -> list[tuple[int, str, str]]:
    """Build the task's requests once and reject rows whose gold continuation cannot be scored as meant.

    Returns every request as (row, context, continuation).
    """
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    requests = []
    checked_rows: set[int] = set()
    for instance in task.instances:
        context, continuation = instance.args[0], instance.args[1]
        row = instance.doc_id
        if continuation == "":
            raise ValueError(f"lm-eval task {name!r}, row {row}: the continuation to score is empty")
        if (merged := _merged_word(context, continuation)) is not None:
            fix = (
                "output_type loglikelihood does not insert target_delimiter: start doc_to_target with a space "
                "(e.g. \"{{' ' + answer}}\") or store the target with its leading space"
                if task.OUTPUT_TYPE == "loglikelihood"
                else "set target_delimiter to ' ' (it is empty)"
            )
            raise ValueError(
                f"lm-eval task {name!r}, row {row}: the continuation {continuation[:40]!r} has no leading space after "
                f"the context ending {context[-40:]!r}, so the model would score the merged word {merged!r} instead; "
                + fix
            )
        if row not in checked_rows:
            checked_rows.add(row)
            if _gold_index(task, instance.doc) < 0:
                raise ValueError(f"lm-eval task {name!r}, row {row}: the gold label is not one of the choices")
        requests.append((row, context, continuation))
    return requests


def _continuation_length(lm: HFLM, context: str, continuation: str) -> int:
    """Number of continuation tokens lm-eval sums the log-probabilities of.

    Mirrors `TemplateLM.loglikelihood`: an empty context conditions on the prefix token, otherwise the pair is
    split by `_encode_pair` (trailing context spaces move into the continuation).
    """
    if context == "":
        tokens = lm.tok_encode(continuation, add_special_tokens=False)
        return len(tokens) - 1 if tokens and tokens[0] == lm.prefix_token_id else len(tokens)
    return len(lm._encode_pair(context, continuation)[1])


def _lm_eval_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's numeric metrics of one task, keyed `metric` (filter `none`) or `metric_filter`."""
    metrics = {}
    for key, value in result.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or "_stderr" in metric or not isinstance(value, (int, float)):
            continue
        metrics[metric if filter_name == "none" else f"{metric}_{filter_name}"] = float(value)
    return metrics


class LMEvalSkills:
    """Evaluation skills backed by lm-eval tasks, for `SkillItTrainer(evaluators=[...])` (out-of-domain setting).

    Args:
        tasks: lm-eval task or group names (groups are expanded: the skills are the leaf tasks), or task YAML
            paths. Only `loglikelihood` and `multiple_choice` tasks: they have a gold continuation to score.
        include_path: a directory (or several) of local task YAML, searched before the built-in tasks.
        metric: the scalar Skill-It minimises per task: `"nll"` (per-token NLL of the gold continuation),
            `"error"` (1 - acc) or `"error_norm"` (1 - acc_norm).
        limit: rows per task (an int, or a fraction < 1 as in lm-eval); None: all.
        batch_size: lm-eval's batch size.
        num_fewshot: few-shot examples in each context (default: the task's own, else 0).
        include_defaults: search lm-eval's built-in tasks too (only indexed when a name is not local).
        tokenizer: the tokenizer to score with; default: the trainer's `processing_class`.
        model_args: extra `HFLM` keyword arguments (e.g. `max_length`, `add_bos_token`).

    Every task is loaded and its rows checked here, before training: an unknown name fails with close matches,
    and a row whose continuation would merge into the context's last word (a `loglikelihood` target without its
    leading space) fails naming the task and row.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        metric: str = "nll",
        limit: int | float | None = None,
        batch_size: int = 8,
        num_fewshot: int | None = None,
        include_defaults: bool = True,
        tokenizer: Any = None,
        model_args: Mapping[str, Any] | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
            raise ValueError(f"limit must be a positive number of rows (or a fraction < 1) or None, got {limit!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.metric = metric
        self.limit = limit
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.model_args = dict(model_args or {})
        self.tasks = load_lm_eval_tasks(tasks, include_path, include_defaults)
        self.skills: tuple[str, ...] = tuple(self.tasks)
        self._requests: dict[str, list[tuple[int, str, str]]] = {}
        for name, task in self.tasks.items():
            if task.OUTPUT_TYPE not in SUPPORTED_OUTPUT_TYPES:
                raise ValueError(
                    f"lm-eval task {name!r} has output_type {task.OUTPUT_TYPE!r}; evaluation skills need a gold "
                    f"continuation to score: use {' or '.join(SUPPORTED_OUTPUT_TYPES)} tasks"
                )
            accuracy = {"error": "acc", "error_norm": "acc_norm"}.get(metric)
            if accuracy is not None and accuracy not in task.aggregation():
                raise ValueError(
                    f"metric={metric!r} needs lm-eval task {name!r} to report {accuracy!r}; it reports "
                    f"{', '.join(task.aggregation())}"
                )
            # As `simple_evaluate` does: an explicit num_fewshot wins, a task without one gets 0-shot.
            if num_fewshot is not None or task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=num_fewshot or 0)
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
            self._requests[name] = _check_requests(name, task, get_sample_size(task, limit))
        self._tokenization_checked = False

    def __repr__(self) -> str:
        return f"LMEvalSkills(tasks={list(self.skills)}, metric={self.metric!r}, limit={self.limit!r})"

    def _check_tokenization(self, lm: HFLM) -> None:
        # lm-eval asserts a non-empty continuation deep inside its batching; say which task and row instead.
        for name, requests in self._requests.items():
            for row, context, continuation in requests:
                if _continuation_length(lm, context, continuation) == 0:
                    raise ValueError(
                        f"lm-eval task {name!r}, row {row}: the continuation {continuation!r} tokenizes to no tokens "
                        f"after the context ending {context[-40:]!r} (it merges into the context's last token)"
                    )
        self._tokenization_checked = True

    def _gold_nll(self, lm: HFLM, task: Task, samples: list[dict[str, Any]]) -> float:
        """Token-weighted mean NLL of the gold continuations (one sample per row; extra filters repeat rows)."""
        nll, tokens, seen = 0.0, 0, set()
        for sample in samples:
            if sample["doc_id"] in seen:
                continue
            seen.add(sample["doc_id"])
            gold = _gold_index(task, sample["doc"])
            context, continuation = sample["arguments"][gold][:2]
            nll -= sample["resps"][gold][0][0]
            tokens += _continuation_length(lm, context, continuation)
        return nll / tokens if tokens else math.nan

    def evaluate(self, model: Any, tokenizer: Any = None) -> dict[str, dict[str, float]]:
        """Every task's metrics for `model`, on this process: lm-eval's own (`acc`, `acc_norm`, ...) and `nll`.

        The model's train/eval mode is restored afterwards (HFLM leaves it in eval mode).
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("LMEvalSkills needs a tokenizer: pass tokenizer= (or processing_class= to the trainer)")
        was_training = model.training
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size, **self.model_args)
            if not self._tokenization_checked:
                self._check_tokenization(lm)
            results = lm_eval_evaluate(
                lm=lm,
                task_dict={"tasks": self.tasks, "groups": {}, "group_map": {}},
                limit=self.limit,
                bootstrap_iters=0,
                log_samples=True,
            )
        finally:
            model.train(was_training)
        return {
            name: {
                **_lm_eval_metrics(results["results"][name]),
                "nll": self._gold_nll(lm, task, results["samples"][name]),
            }
            for name, task in self.tasks.items()
        }

    def evaluate_trainer(self, trainer: Any) -> dict[str, dict[str, float]]:
        """`evaluate` on the trainer's model, the same result on every process.

        Unsharded (one process, DDP): the main process runs lm-eval alone and broadcasts the results. Sharded
        with FSDP: a forward is a collective (every rank all-gathers each layer's weights), so every rank runs
        lm-eval on all the requests, in the same batches, with its shard of the model: the same forwards in the
        same order on every rank, and nothing needs to fit on one device but the model FSDP already trains.
        (Gathering the full weights on the main process instead would need the whole model in one process's
        memory, which is what sharding avoids; splitting the requests across ranks would give ranks different
        numbers of forwards, a hang.) The main process's results are then broadcast, so every rank holds exactly
        the same numbers. DeepSpeed ZeRO-3 is refused: it would work the same way but is not tested.

        A failure on the main process is raised on every process (instead of leaving the others waiting).
        """
        accelerator = trainer.accelerator
        if is_deepspeed_zero3_enabled():
            raise ValueError(
                "LMEvalSkills does not support DeepSpeed ZeRO-3 (untested); use FSDP2, DDP or ZeRO-1/2 for runs with "
                "lm-eval evaluation skills"
            )
        tokenizer = self.tokenizer if self.tokenizer is not None else trainer.processing_class
        every_rank = trainer.is_fsdp_enabled and accelerator.num_processes > 1
        results, error = None, None
        if accelerator.is_main_process or every_rank:
            # Under FSDP2 the sharded model is the trainer's model itself (`fully_shard` works in place).
            model = trainer.model_wrapped if every_rank else accelerator.unwrap_model(trainer.model)
            try:
                results = self.evaluate(model, tokenizer)
            except Exception as err:
                error = err
        if accelerator.num_processes > 1:
            message = None if error is None else f"{type(error).__name__}: {error}"
            message, results = broadcast_object_list([message, results], from_process=0)
            if error is None and message is not None:
                raise RuntimeError(f"lm-eval evaluation failed on the main process: {message}")
        if error is not None:
            raise error
        return results

    def scalar(self, metrics: Mapping[str, float]) -> float:
        """The number Skill-It minimises, from one task's `evaluate` metrics."""
        if self.metric == "nll":
            return metrics["nll"]
        return 1.0 - metrics["acc" if self.metric == "error" else "acc_norm"]

    def __call__(self, trainer: Any) -> dict[str, float]:
        return {name: self.scalar(metrics) for name, metrics in self.evaluate_trainer(trainer).items()}


class LMEvalCallback(TrainerCallback):
    """Logs every lm-eval task's metrics through `Trainer.log` at the end of training (and, optionally, at its start).

    Keys are `{prefix}/{task}/{metric}`, e.g. `lm_eval/arc_easy/acc_norm` and `lm_eval/arc_easy/nll`, so
    TensorBoard/W&B receive them through `report_to`.

    Args:
        trainer: the trainer whose model is evaluated and whose `log` records the results.
        skills: the [`LMEvalSkills`] to run (it can be the one passed as `evaluators=`).
        prefix: first part of the logged keys.
        at_train_begin: also evaluate before the first step, for a before/after comparison.
        at_train_end: evaluate after the last step (the default).
    """

    def __init__(
        self,
        trainer: Any,
        skills: LMEvalSkills,
        prefix: str = "lm_eval",
        at_train_begin: bool = False,
        at_train_end: bool = True,
    ):
        self.trainer = trainer
        self.skills = skills
        self.prefix = prefix
        self.at_train_begin = at_train_begin
        self.at_train_end = at_train_end

    def _log(self) -> None:
        results = self.skills.evaluate_trainer(self.trainer)
        self.trainer.log(
            {
                f"{self.prefix}/{task}/{metric}": value
                for task, metrics in results.items()
                for metric, value in metrics.items()
            }
        )

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_train_begin:
            self._log()

    def on_train_end(self, args, state, control, **kwargs):
        if self.at_train_end:
            self._log()


@dataclass
class LMEvalArguments:
    """`lm_eval:` section of a recipe: the lm-eval tasks that are the run's evaluation skills, and their final report."""

    tasks: list[str] = field(metadata={"help": "lm-eval task or group names (or task YAML paths)."})
    include_path: str | list[str] | None = field(
        default=None, metadata={"help": "Directory (or directories) of local task YAML."}
    )
    metric: str = field(
        default="nll", metadata={"help": "Per-task scalar Skill-It minimises: nll, error, error_norm."}
    )
    limit: int | float | None = field(default=None, metadata={"help": "Rows per task (a fraction if < 1); None: all."})
    batch_size: int = field(default=8, metadata={"help": "lm-eval batch size."})
    num_fewshot: int | None = field(
        default=None, metadata={"help": "Few-shot examples (default: the task's, else 0)."}
    )
    include_defaults: bool = field(default=True, metadata={"help": "Search lm-eval's built-in tasks too."})
    model_args: dict[str, Any] | None = field(
        default=None, metadata={"help": "Extra HFLM keyword arguments (max_length, add_bos_token...)."}
    )
    log_at_train_begin: bool = field(
        default=False, metadata={"help": "Log every task's metrics before training (LMEvalCallback)."}
    )
    log_at_train_end: bool = field(default=True, metadata={"help": "Log every task's metrics after training."})

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"lm_eval.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

    def skills(self, tokenizer: Any = None) -> LMEvalSkills:
        """Load and check the tasks (before any training). Every field but the `log_at_*` ones is the
        [`LMEvalSkills`] argument of the same name."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("log_at_")}
        return LMEvalSkills(**settings, tokenizer=tokenizer)

    def callback(self, trainer: Any, skills: LMEvalSkills) -> LMEvalCallback | None:
        """The final-report callback for `trainer`, or None when neither log_at_* is set."""
        if not (self.log_at_train_begin or self.log_at_train_end):
            return None
        return LMEvalCallback(
            trainer, skills, at_train_begin=self.log_at_train_begin, at_train_end=self.log_at_train_end
        )
