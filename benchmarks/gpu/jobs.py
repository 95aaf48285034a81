"""The GPU comparison's child processes (`run.py --child SPEC`): a method on a seed (`run_job`, pre-training or
LoRA fine-tuning: the spec carries its settings), the timing of `SkillItTrainer` against a plain `Trainer`
(`run_timing`), and the FSDP check (`run_fsdp`); `child_main` runs the one its spec names."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from benchmarks.gpu.data import _skillset
from benchmarks.gpu.settings import EVAL_BATCH, LR, TASKS


def _fidelity_fields() -> dict[str, str]:
    """The reference-code options `SkillItConfig` offers, by meaning: {"window_unit": field, "window_reduce": field,
    "eval_every": field}; empty where this checkout has none."""
    from dataclasses import fields

    from hf_skillit import SkillItConfig

    names = {f.name for f in fields(SkillItConfig)}
    wanted = {"window_unit": "window_unit", "window_reduce": "window_reduce", "eval_every": "skill_eval_steps"}
    found = {meaning: name for meaning, name in wanted.items() if name in names}
    return found if len(found) == len(wanted) else {}


def _training_kwargs(spec: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """`TrainingArguments` shared by every run: the paper's optimizer (AdamW, weight decay 0.01; lr 5e-5 unless the
    spec gives its own, as fine-tuning does), bf16 mixed precision where the GPU has it, no checkpoints, no
    logging."""
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"],
        # Evaluation computes logits over the whole vocabulary at every position: 64 rows x 36 x 49,152 floats is
        # 0.45 GB per forward, times the processes sharing the device.
        per_device_eval_batch_size=EVAL_BATCH,
        learning_rate=spec.get("lr", LR),
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        lr_scheduler_type="constant",
        seed=spec["seed"],
        data_seed=spec["seed"],
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
    )


def _config(spec: dict[str, Any], output_dir: str, **skillit):
    from hf_skillit import SkillItConfig

    kwargs = {
        **_training_kwargs(spec, output_dir),
        "overwrite_output_dir": True,
        "eval_samples_per_skill": spec["validation_per_skill"],
        "evaluate_skills_every_round": False,
    }
    return SkillItConfig(**{**kwargs, **skillit})


def _skillit_trainer(model, config, skills, tokenizer, callbacks=(), graph=None):
    """`SkillItTrainer` as every run here builds it: the tokenizer as processing class, no lm-eval evaluators."""
    from hf_skillit import SkillItTrainer

    return SkillItTrainer(
        model=model, args=config, skills=skills, graph=graph, processing_class=tokenizer, callbacks=list(callbacks)
    )


def _load_model(spec: dict[str, Any]):
    """The tokenizer and the float32 model, through the recipes' `load_model` (as `hf-skillit train` loads it), so a
    spec's `lora` wraps it with peft exactly as a recipe's `model.lora:` does."""
    from transformers import AutoTokenizer, set_seed

    from hf_skillit.recipes.build import load_model
    from hf_skillit.recipes.sections import ModelArguments

    set_seed(spec["seed"])  # peft draws the LoRA A matrices: the same adapter for every method of a seed
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    arguments = ModelArguments(name_or_path=spec["model"], dtype="float32", lora=spec.get("lora"))
    return load_model(arguments, tokenizer, None), tokenizer


class Deadline(TrainerCallback):
    """Stops training at a wall-clock deadline (a safety net: the plan should end before it)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() > self.deadline and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_at = state.global_step


class StepTimer(TrainerCallback):
    """The wall-clock time at the end of every optimizer step (the device synchronised first)."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def _rate(times: list[float], warmup: int, batch: int) -> dict[str, float]:
    measured = times[warmup:]
    seconds = (measured[-1] - measured[0]) / (len(measured) - 1)
    return {
        # Six significant digits: GPU steps last milliseconds, where a fixed 5 decimals loses 0.1 % of the rate.
        "s_per_step": float(f"{seconds:.6g}"),
        "samples_per_s": round(batch / seconds, 1),
        "steps_timed": len(measured) - 1,
    }


def _barrier(spec: dict[str, Any], stage: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Write this process's `payload` for `stage` and wait until every process of the wave has (or a timeout);
    returns all payloads."""
    folder = Path(spec["barrier"]) / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{spec['name']}.tmp").write_text(json.dumps({**payload, "time": time.time()}))
    os.replace(folder / f"{spec['name']}.tmp", folder / f"{spec['name']}.json")
    give_up = time.time() + spec["barrier_timeout_s"]
    while True:
        entries = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        if len(entries) >= spec["wave_size"] or time.time() > give_up:
            return entries
        time.sleep(0.5)


def _calibrate(model, skills, validation, tokenizer, spec: dict[str, Any]) -> tuple[float, float]:
    """(steps/s, seconds per curve evaluation) of this process while every process of the wave does the same,
    on a throwaway copy of the model."""
    import copy

    from hf_skillit.synthetic import CurveRecorder

    steps = spec["calibration_steps"]
    probe = {**spec, "steps": steps}
    config = _config(probe, spec["output_dir"] + "_calibration", mixing="stratified", rounds=1)
    timer = StepTimer()
    trainer = _skillit_trainer(copy.deepcopy(model), config, skills, tokenizer, [timer])
    trainer.train()
    rate = 1.0 / _rate(timer.times, steps // 3, 1)["s_per_step"]
    recorder = CurveRecorder(1, validation, tokenizer, batch_size=EVAL_BATCH)
    recorder.trainer = trainer
    start = time.perf_counter()
    recorder.record(0)
    return rate, time.perf_counter() - start


def _agree_on_steps(spec: dict[str, Any], rate: float, eval_s: float) -> tuple[int, float]:
    """Every process of the wave shares its measured rate and evaluation time; the processes of one table (the
    methods and seeds compared with each other) then plan the same number of steps: what the table's slowest fits
    before the deadline, its evaluations (the code setting's too) included, a multiple of rounds x evaluations per
    round. Each table plans for itself (a LoRA step of batch 8 is not a full step of batch 32), from rates all
    measured under the contention of the whole wave."""
    extra = 120 if spec["setting"] == "code" else 0  # the reference code's evaluations inside the rounds
    payload = {"rate": rate, "eval_s": eval_s, "extra_evaluations": extra, "table": spec["table"]}
    entries = _barrier(spec, "rates", payload)
    mine = [e for e in entries if e["table"] == spec["table"]]
    slowest = min(e["rate"] for e in mine)
    if spec["fixed_steps"]:
        return spec["max_steps"], slowest
    start = max(e["time"] for e in entries) if len(entries) >= spec["wave_size"] else time.time()
    evaluations = spec["evaluations"] + 1 + max(e["extra_evaluations"] for e in mine)
    seconds = (spec["deadline"] - start) * 0.85 - evaluations * max(e["eval_s"] for e in mine)
    steps = int(seconds * slowest // spec["multiple"]) * spec["multiple"]
    return max(spec["multiple"], min(steps, spec["max_steps"])), slowest


def _adapter_check(model, before: dict[str, Any]) -> dict[str, Any]:
    """What trained in a peft model: the trainable tensors (all LoRA ones?), the norm of the LoRA B matrices (peft
    starts them at zero, so > 0 means the adapter moved), whether the base weights noted in `before` (by
    `_initial_weights`) are unchanged, and the norm the LoRA A matrices started from (the same for every method of
    a seed: the same initial adapter)."""
    import torch

    named = dict(model.named_parameters())
    trainable = [name for name, p in named.items() if p.requires_grad]
    base = {name: value for name, value in before.items() if name != "initial_lora_A_norm"}
    return {
        "trainable_tensors": len(trainable),
        "trainable_parameters": sum(named[name].numel() for name in trainable),
        "trainable_all_lora": bool(trainable) and all("lora_" in name for name in trainable),
        "lora_B_norm": sum(float(p.detach().float().norm()) for name, p in named.items() if "lora_B" in name),
        "base_weights_unchanged": all(torch.equal(named[name].detach().cpu(), value) for name, value in base.items()),
        "initial_lora_A_norm": before["initial_lora_A_norm"],
    }


def _initial_weights(model) -> dict[str, Any]:
    """Before training a peft model: copies of the frozen base weights of the first adapted module (peft's
    `base_layer`) and of the embedding, and the norm of the LoRA A matrices."""
    named = dict(model.named_parameters())
    wanted = [n for n in named if "base_layer.weight" in n][:1] + [n for n in named if "embed_tokens" in n][:1]
    before: dict[str, Any] = {name: named[name].detach().cpu().clone() for name in wanted}
    before["initial_lora_A_norm"] = sum(float(p.detach().float().norm()) for n, p in named.items() if "lora_A" in n)
    return before


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One method on one seed: agree on the number of steps with the table, train, record the curve."""
    import numpy as np
    import torch

    from hf_skillit import SkillsGraph
    from hf_skillit.synthetic import CurveRecorder

    task = TASKS[spec["task"]]
    skills, validation = _skillset(Path(spec["data"]), spec["pool"], task["skills"])
    model, tokenizer = _load_model(spec)
    _barrier(spec, "loaded", {})  # calibrate together, under the contention of the whole wave
    rate, eval_s = _calibrate(model, skills, validation, tokenizer, spec)
    steps, slowest = _agree_on_steps(spec, rate, eval_s)
    spec = {**spec, "steps": steps}
    eval_every = steps // spec["evaluations"]
    extra = dict(spec.get("extra", {}))
    if spec["setting"] == "code":  # the reference code evaluates every max_steps / 120 steps (within a round here)
        per_round, every = steps // spec["rounds"], max(1, steps // 120)
        while per_round % every:
            every -= 1
        extra[spec["eval_every_field"]] = every
    graph = None if spec.get("graph") is None else SkillsGraph(np.asarray(spec["graph"], dtype=float), task["skills"])
    config = _config(
        spec,
        spec["output_dir"],
        mixing=spec["mixing"],
        rounds=spec["rounds"],
        eta=spec["eta"],
        window=spec["window"],
        **extra,
    )
    recorder = CurveRecorder(eval_every, validation, tokenizer, batch_size=EVAL_BATCH)
    deadline = Deadline(spec["deadline"])
    trainer = _skillit_trainer(model, config, skills, tokenizer, [recorder, deadline], graph=graph)
    recorder.trainer = trainer
    before = _initial_weights(model) if spec.get("lora") else {}
    start = time.time()
    trainer.train()
    wall = time.time() - start
    done = trainer.state.global_step
    return {
        "steps": steps,
        "steps_done": done,
        "stopped_early": deadline.stopped_at is not None,
        "calibrated_steps_per_s": round(rate, 2),
        "calibrated_eval_s": round(eval_s, 3),
        "wave_slowest_steps_per_s": round(slowest, 2),
        "train_wall_s": round(wall, 2),
        "samples_per_s": round(done * spec["batch"] / wall, 2),
        "target_skills": list(config.target_skills or []),
        "adapter": _adapter_check(model, before) if spec.get("lora") else None,
        "curve": recorder.points,
        "trajectory": [{k: r[k] for k in ("round", "global_step", "p", "samples")} for r in trainer.trajectory],
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }


def run_timing(spec: dict[str, Any]) -> dict[str, Any]:
    """SkillItTrainer (fixed uniform mixture) against a plain Trainer on the same rows; round-end evaluation cost;
    the mixture stream's rate against the training rate."""
    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from hf_skillit import LMCollator

    task = TASKS[spec["task"]]
    skills, _ = _skillset(Path(spec["data"]), "balanced", task["skills"])
    uniform = {s: 1.0 for s in task["skills"]}
    result: dict[str, Any] = {"steps": spec["steps"], "warmup": spec["warmup"], "batch": spec["batch"]}

    # The stream alone, as the trainer reads it (its DataLoader, collation included), before any device work.
    model, tokenizer = _load_model(spec)
    # One round of `stream_batches` batches: the loader covers exactly one round, so iterate it once.
    stream_spec = {**spec, "steps": spec["stream_batches"]}
    config = _config(stream_spec, spec["output_dir"] + "/stream", mixing="fixed", fixed_weights=uniform, rounds=1)
    loader = _skillit_trainer(model, config, skills, tokenizer).get_train_dataloader()
    start = time.perf_counter()
    batches = sum(1 for _ in loader)
    stream_rate = batches * spec["batch"] / (time.perf_counter() - start)
    result["stream_samples_per_s"] = round(stream_rate, 1)

    # SkillItTrainer, fixed mixture: the per-step cost of its data path and round boundaries, with the LM head at
    # the scored positions only (its default) and everywhere (as a plain Trainer computes it).
    for key, scored_only in (("skillit_trainer", True), ("skillit_trainer_all_logits", False)):
        model, tokenizer = _load_model(spec)
        config = _config(
            spec, spec["output_dir"] + f"/{key}", mixing="fixed", fixed_weights=uniform, rounds=spec["rounds"]
        )
        timer = StepTimer()
        trainer = _skillit_trainer(model, config, skills, tokenizer, [timer])
        trainer.scored_logits_only = scored_only
        trainer.train()
        result[key] = _rate(timer.times, spec["warmup"], spec["batch"])
        if scored_only:
            start = time.perf_counter()
            trainer.evaluate_skills(list(trainer.skills.eval_skills))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            result["round_eval_s"] = round(time.perf_counter() - start, 3)
        del trainer

    # Plain Trainer on the same rows shuffled together (what a uniform fixed mixer draws from).
    model, tokenizer = _load_model(spec)
    rows = datasets.concatenate_datasets([skills.train(s) for s in task["skills"]]).shuffle(seed=spec["seed"])
    rows = rows.select_columns(["input_ids", "attention_mask", "labels"])
    timer = StepTimer()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**_training_kwargs(spec, spec["output_dir"] + "/plain")),
        train_dataset=rows,
        data_collator=LMCollator(pad_token_id=tokenizer.pad_token_id),
        callbacks=[timer],
    )
    trainer.train()
    result["plain_trainer"] = _rate(timer.times, spec["warmup"], spec["batch"])
    plain = result["plain_trainer"]["s_per_step"]
    all_logits = result["skillit_trainer_all_logits"]["s_per_step"]
    # Same computation as the plain Trainer: what the data path and round boundaries cost.
    result["skillit_overhead_pct"] = round(100 * (all_logits / plain - 1), 2)
    result["scored_logits_speedup"] = round(all_logits / result["skillit_trainer"]["s_per_step"], 3)
    result["stream_over_training"] = round(stream_rate / result["skillit_trainer"]["samples_per_s"], 1)
    if torch.cuda.is_available():
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def _cut_to_varied_lengths(skills):
    """The skills with every training row cut to a length of its own (from 4 tokens to the whole row) and scored on
    every token: rows of different lengths, as real text has, which each batch pads to its own longest row."""
    from hf_skillit import SkillSet

    def cut(row, index):
        n = 4 + (index * 7919) % max(1, len(row["input_ids"]) - 3)
        return {"input_ids": row["input_ids"][:n], "attention_mask": [1] * n, "labels": row["input_ids"][:n]}

    train = {name: skills.train(name).map(cut, with_indices=True) for name in skills.train_skills}
    return SkillSet(train, {name: skills.validation(name) for name in skills.eval_skills})


def _record_evaluation_forwards(model, trainer_step) -> list[dict[str, Any]]:
    """Records what every evaluation forward of `model` sees (the round-0 check, issue 22): the step, the module's
    class (FSDP2 swaps in an `FSDP...` class when it shards), whether its weights are DTensor shards, their device,
    the inputs' device and whether autocast is on."""
    import torch
    from torch.distributed.tensor import DTensor

    seen: list[dict[str, Any]] = []

    def hook(module, args, kwargs):
        if module.training:
            return
        weight = next(module.parameters())
        inputs = kwargs.get("input_ids", args[0] if args else None)
        entry = {
            "step": trainer_step(),
            "module": type(module).__name__,
            "dtensor": isinstance(weight, DTensor),
            "weights_on": str(weight.device),
            "inputs_on": str(inputs.device) if inputs is not None else None,
            "autocast": torch.is_autocast_enabled(weight.device.type),
        }
        if entry not in seen:
            seen.append(entry)

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def run_fsdp(spec: dict[str, Any]) -> dict[str, Any]:
    """2 rounds of SkillItTrainer under `accelerate launch` with the FSDP config (one process on the one GPU), on rows
    of different lengths; whether the evaluation before the first step (round 0) saw the model as the later rounds
    did (the prepared, sharded module, on the device, under the same autocast)."""
    task = TASKS["lego"]
    skills, _ = _skillset(Path(spec["data"]), "balanced", task["skills"])
    skills = _cut_to_varied_lengths(skills)
    lengths = sorted({len(ids) for name in skills.train_skills for ids in skills.train(name)["input_ids"]})
    model, tokenizer = _load_model(spec)
    config = _config(spec, spec["output_dir"], mixing="stratified", rounds=2, evaluate_skills_every_round=True)
    trainer = _skillit_trainer(model, config, skills, tokenizer)
    seen = _record_evaluation_forwards(model, lambda: trainer.state.global_step)
    trainer.train()
    losses = [r["eval_loss"] for r in trainer.trajectory]
    from torch.distributed.tensor import DTensor

    def kinds(at_round_0: bool) -> set[tuple]:
        """What the evaluations at step 0, or at the later steps, saw (the step itself left out)."""
        return {tuple((k, v) for k, v in e.items() if k != "step") for e in seen if (e["step"] == 0) == at_round_0}

    return {
        # accelerate records FSDP on the trainer's Accelerator; PartialState keeps saying MULTI_GPU.
        "distributed_type": str(trainer.accelerator.distributed_type),
        "sharded_parameters": any(isinstance(p, DTensor) for p in trainer.model_wrapped.parameters()),
        "fsdp_enabled": bool(trainer.is_fsdp_enabled),
        "rounds": len(losses),
        "losses_finite": bool(losses) and all(math.isfinite(v) for r in losses for v in r.values()),
        "eval_loss": losses,
        "row_lengths": [lengths[0], lengths[-1]],
        "evaluation_forwards": seen,
        "round0_evaluated": bool(kinds(True)),
        "round0_as_later_rounds": bool(kinds(True)) and kinds(True) == kinds(False),
    }


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch
    from accelerate import PartialState

    torch.set_num_threads(spec.get("threads", 1))
    result = {"job": run_job, "timing": run_timing, "fsdp": run_fsdp}[spec["kind"]](spec)
    if PartialState().is_main_process:
        Path(spec["result"]).write_text(json.dumps(result))
    # Interpreter shutdown with torch, datasets and a process group loaded took up to 40 s per process on the
    # loaded CI machine; everything is written, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
