"""The paper's LEGO / addition comparison on a pretrained SmolLM2-135M, on one GPU, in one command (issue 12).

    python benchmarks/gpu/run.py --gguf-parts outputs/gpu            # on the GPU machine: writes to $OUT
    python benchmarks/gpu/run.py --smoke --out /tmp/smoke            # CPU, tiny llama GGUF, under 3 minutes (CI)

What one run does, within `--budget-s` (default 480 s of wall time, so the command ends inside 9 minutes):

1. **Model.** The SmolLM2-135M GGUF (from `--gguf`, `--gguf-parts` or the cache of `hf-skillit fetch-model`) is
   checked against its known SHA-256 and converted once to safetensors with `hf_skillit.pretrained` (the smoke mode
   writes a tiny llama GGUF with `write_llama_gguf` and takes the same path).
2. **Timing** (one process, GPU otherwise idle): `SkillItTrainer` with a fixed uniform mixture against a plain
   `transformers.Trainer` on the same rows, batch, collator and precision: samples/s of each after warm-up, the cost
   of one round-end evaluation, and the rate of the mixture stream (the trainer's own DataLoader, collation
   included) against the GPU training rate.
3. **FSDP smoke check** (issue 16): `accelerate launch` with `recipes/accelerate/fsdp_2gpu.yaml`, one process on
   the one GPU, llama layers wrapped: 2 rounds of `SkillItTrainer`; reports whether FSDP was really enabled.
4. **LEGO k = 5 continual pre-training** (paper §4.1, Appendix C.3: batch 32, lr 5e-5, AdamW, weight decay 0.01,
   eta 0.5, T 6, w 3, answer-only loss, 100 validation rows per skill): Skill-It against skill-stratified and random
   sampling, as parallel processes on the one GPU (small batches leave it mostly idle). Random draws from an
   imbalanced pool (1:1:1:3:5, the paper's); the others from a balanced pool. Every method of a seed starts from
   the same weights. As many steps as fit: a single-process rate from step 2 plans the steps, a deadline in every
   process stops training if the plan was too optimistic, and tables compare methods at the last step all reached.
   Where `SkillItConfig` offers the reference code's variants (window counted in evaluations, window averaged),
   the code-faithful setting runs beside the paper-text one; every table says which setting it used.
5. Then **addition** (3 digits, eta 0.1, T 5) and **more LEGO seeds**, while the budget lasts.

Outputs (in `$OUT`, else `--out`): `results.json` (everything), `results.md` (tables, settings, commands),
`lego_curves.png` / `addition_curves.png` (per-skill validation loss and accuracy against steps), `log.txt`.

Moving the model to a GPU machine that reaches no registry: the GGUF is 98 MB and one call carries at most 64 MiB,
so `--pack DIR` splits it into two parts (and stores the wheels the GPU image lacks) for two calls on the same warm
machine; see docs/pretrained.md, "GPU run".
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runs from a checkout without installing hf_skillit
    sys.path.insert(0, str(ROOT))

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98362432
# part1 + the wheels (16 MiB) + the repository, and part2 (50 MiB) + the repository, each stay under a call's 64 MiB.
PART_BYTES = 44 * 2**20
TASKS = {
    # task: skills, eta, rounds T, window w, imbalanced proportions of the random baseline (paper)
    "lego": {"skills": ["1", "2", "3", "4", "5"], "eta": 0.5, "rounds": 6, "window": 3, "random": [1, 1, 1, 3, 5]},
    "addition": {"skills": ["1", "2", "3"], "eta": 0.1, "rounds": 5, "window": 3, "random": [13, 14, 18]},
}
BATCH = 32
LR = 5e-5
VALIDATION_PER_SKILL = 100
EVAL_BATCH = 64
# The reference code's LEGO pre-training graph (HazyResearch/skill-it scripts/lego/pt/skillit.sh): row "2" has 1 on
# skills 1-4, the diagonal 1; trainer/mw_trainer.py turns every off-diagonal 1 into 0.5.
CODE_LEGO_GRAPH = [
    [1.0, 0.0, 0.0, 0.0, 0.0],
    [0.5, 1.0, 0.5, 0.5, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
]
_START = time.time()
_LOG: list[str] = []


def log(message: str) -> None:
    line = f"[{time.time() - _START:7.1f}s] {message}"
    print(line, flush=True)
    _LOG.append(line)


# ----- model --------------------------------------------------------------------------------------------------


def pack(folder: Path, gguf: Path | None) -> None:
    """Split the SmolLM2 GGUF into `folder/part1`, `folder/part2` (each well under a call's 64 MiB) and download the
    wheels the GPU image lacks into `folder/wheels` (Python 3.12, x86-64)."""
    from hf_skillit.pretrained import default_cache_dir, file_sha256

    gguf = gguf or default_cache_dir() / "downloads" / SMOLLM2_GGUF
    if not gguf.is_file() or file_sha256(gguf) != SMOLLM2_SHA256:
        raise SystemExit(f"{gguf} is not the SmolLM2 GGUF: run `hf-skillit fetch-model smollm2-135m` first")
    split_parts(gguf.read_bytes(), folder)
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # The image has torch, accelerate, pyarrow, pandas, tokenizers, safetensors, huggingface-hub, but not datasets (and
    # its dill/multiprocess) nor gguf; transformers, peft, regex and fsspec are pinned to the versions tested here.
    pins = ["transformers==5.24.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "gguf==0.19.0"]
    pins += ["regex==2026.11.19", "fsspec==2026.9.0", "peft==0.21.2"]  # peft: transformers' Trainer imports it
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28)] + ["--platform=manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version=3.12"]
    subprocess.run([*command, "--implementation=cp", *platforms, "-d", str(wheels), *pins], check=True)
    print(f"packed {folder}: part1, part2 and wheels; see docs/pretrained.md for the two device calls")


def split_parts(data: bytes, folder: Path, part_bytes: int = PART_BYTES) -> None:
    """`folder/part1/<name>.01` (the first `part_bytes`) and `folder/part2/<name>.02` (the rest)."""
    for index, piece in enumerate((data[:part_bytes], data[part_bytes:]), start=1):
        part = folder / f"part{index}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"{SMOLLM2_GGUF}.{index:02d}").write_bytes(piece)


def _assemble(parts_root: Path, work: Path) -> Path:
    from hf_skillit.pretrained import file_sha256

    pieces = sorted(parts_root.glob(f"part*/{SMOLLM2_GGUF}.*"))
    if not pieces:
        raise SystemExit(f"no parts of {SMOLLM2_GGUF} under {parts_root}/part*/ (see --pack)")
    out = work / SMOLLM2_GGUF
    with open(out, "wb") as f:
        for piece in pieces:
            f.write(piece.read_bytes())
    size = out.stat().st_size
    if size != SMOLLM2_SIZE or file_sha256(out) != SMOLLM2_SHA256:
        raise SystemExit(
            f"the parts {[p.parent.name for p in pieces]} make {size} bytes, not the SmolLM2 GGUF "
            f"({SMOLLM2_SIZE} bytes): a part is missing (the first call's machine was not kept warm?) or damaged"
        )
    return out


def prepare_model(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """The converted checkpoint folder, going through `hf_skillit.pretrained` as a user would."""
    from hf_skillit.pretrained import default_cache_dir, fetch_model, write_llama_gguf
    from hf_skillit.synthetic import build_bpe_tokenizer, make_tiny_model, tiny_llama_config

    cache = work / "cache"
    if args.smoke or args.tiny_model:
        tokenizer = build_bpe_tokenizer()
        model = make_tiny_model(tiny_llama_config(tokenizer), seed=0)
        gguf = write_llama_gguf(model, tokenizer, work / "tiny-llama.gguf")
        source = "tiny llama (hidden 32, 2 layers) written as GGUF by write_llama_gguf"
        name = "a tiny llama (smoke mode)" if args.smoke else "a tiny llama (development run)"
    elif args.gguf_parts:
        gguf, source = (
            _assemble(Path(args.gguf_parts), work),
            f"SmolLM2-135M-Instruct Q4_1 GGUF ({SMOLLM2_SHA256[:12]})",
        )
        name = "SmolLM2-135M"
    else:
        gguf = Path(args.gguf) if args.gguf else default_cache_dir() / "downloads" / SMOLLM2_GGUF
        if not gguf.is_file():
            raise SystemExit(
                f"{gguf} not found: pass --gguf, --gguf-parts, or run `hf-skillit fetch-model smollm2-135m`"
            )
        source, name = f"GGUF {gguf}", "SmolLM2-135M"
    start = time.time()
    folder = fetch_model(gguf, cache_dir=cache)
    return folder, {"name": name, "source": source, "gguf": str(gguf), "convert_s": round(time.time() - start, 1)}


# ----- data ---------------------------------------------------------------------------------------------------


def prepare_data(task: str, tokenizer, pool: int, seed: int, work: Path, validation_per_skill: int) -> Path:
    """Balanced and imbalanced (random baseline) training pools and balanced validation rows, encoded answer-only,
    saved under `work/data/<task>_seed<seed>`; validation rows are in neither pool."""
    from hf_skillit.synthetic import encode, make_addition, make_lego

    folder = work / "data" / f"{task}_seed{seed}"
    if (folder / "done").exists():
        return folder
    spec = TASKS[task]
    k = len(spec["skills"])

    def generate(n: int, generator_seed: int, proportions):
        if task == "lego":
            return make_lego(n, k=k, proportions=proportions, seed=generator_seed)
        return make_addition(n, digits=k, proportions=proportions, seed=generator_seed)

    validation = generate(validation_per_skill * k, 1000 * seed + 1, None)
    held_out = set(validation["text"])
    encode(validation, tokenizer).save_to_disk(str(folder / "validation"))
    for name, proportions, generator_seed in (("balanced", None, 2), ("imbalanced", spec["random"], 3)):
        rows = generate(pool, 1000 * seed + generator_seed, proportions)
        rows = rows.filter(lambda b: [t not in held_out for t in b["text"]], batched=True)
        encode(rows, tokenizer).save_to_disk(str(folder / name))
    (folder / "done").write_text("ok")
    return folder


def _prepare_data_worker(task: str, model_dir: str, pool: int, seed: int, work: str, validation_per_skill: int) -> str:
    """`prepare_data` in a worker process (one per task and seed: encoding is Python-bound)."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return str(prepare_data(task, tokenizer, pool, seed, Path(work), validation_per_skill))


class _Inline:
    """An executor that runs each call at once, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        future.set_result(fn(*args))
        return future


def _skillset(data: Path, pool: str, skills: list[str]):
    import datasets

    from hf_skillit import SkillSet

    validation = datasets.load_from_disk(str(data / "validation"))
    train = datasets.load_from_disk(str(data / pool))
    return SkillSet.from_column(train, "skill", validation=validation, order=skills), validation


# ----- the child processes ------------------------------------------------------------------------------------


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
    """`TrainingArguments` shared by every run: the paper's optimizer (AdamW, lr 5e-5, weight decay 0.01), bf16
    mixed precision where the GPU has it, no checkpoints, no logging."""
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"],
        # Evaluation computes logits over the whole vocabulary at every position: 64 rows x 36 x 49,152 floats is
        # 0.45 GB per forward, times the processes sharing the device.
        per_device_eval_batch_size=EVAL_BATCH,
        learning_rate=LR,
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    return model, tokenizer


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
    """Every process of the wave shares its measured rate and evaluation time; all then plan the same number of
    steps: what the slowest fits before the deadline, its evaluations (the code setting's too) included, a
    multiple of rounds x evaluations per round."""
    extra = 120 if spec["setting"] == "code" else 0  # the reference code's evaluations inside the rounds
    entries = _barrier(spec, "rates", {"rate": rate, "eval_s": eval_s, "extra_evaluations": extra})
    slowest = min(e["rate"] for e in entries)
    if spec["fixed_steps"]:
        return spec["max_steps"], slowest
    start = max(e["time"] for e in entries) if len(entries) >= spec["wave_size"] else time.time()
    evaluations = spec["evaluations"] + 1 + max(e["extra_evaluations"] for e in entries)
    seconds = (spec["deadline"] - start) * 0.85 - evaluations * max(e["eval_s"] for e in entries)
    steps = int(seconds * slowest // spec["multiple"]) * spec["multiple"]
    return max(spec["multiple"], min(steps, spec["max_steps"])), slowest


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One method on one seed: agree on the number of steps with the wave, train, record the curve."""
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
        per_round, every = steps // task["rounds"], max(1, steps // 120)
        while per_round % every:
            every -= 1
        extra[spec["eval_every_field"]] = every
    graph = None if spec.get("graph") is None else SkillsGraph(np.asarray(spec["graph"], dtype=float), task["skills"])
    config = _config(
        spec,
        spec["output_dir"],
        mixing=spec["mixing"],
        rounds=task["rounds"],
        eta=task["eta"],
        window=task["window"],
        **extra,
    )
    recorder = CurveRecorder(eval_every, validation, tokenizer, batch_size=EVAL_BATCH)
    deadline = Deadline(spec["deadline"])
    trainer = _skillit_trainer(model, config, skills, tokenizer, [recorder, deadline], graph=graph)
    recorder.trainer = trainer
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


def run_fsdp(spec: dict[str, Any]) -> dict[str, Any]:
    """2 rounds of SkillItTrainer under `accelerate launch` with the FSDP config (one process on the one GPU)."""
    task = TASKS["lego"]
    skills, _ = _skillset(Path(spec["data"]), "balanced", task["skills"])
    model, tokenizer = _load_model(spec)
    config = _config(spec, spec["output_dir"], mixing="stratified", rounds=2, evaluate_skills_every_round=True)
    trainer = _skillit_trainer(model, config, skills, tokenizer)
    trainer.train()
    losses = [r["eval_loss"] for r in trainer.trajectory]
    from torch.distributed.tensor import DTensor

    return {
        # accelerate records FSDP on the trainer's Accelerator; PartialState keeps saying MULTI_GPU.
        "distributed_type": str(trainer.accelerator.distributed_type),
        "sharded_parameters": any(isinstance(p, DTensor) for p in trainer.model_wrapped.parameters()),
        "fsdp_enabled": bool(trainer.is_fsdp_enabled),
        "rounds": len(losses),
        "losses_finite": bool(losses) and all(math.isfinite(v) for r in losses for v in r.values()),
        "eval_loss": losses,
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


# ----- the parent ---------------------------------------------------------------------------------------------


def _launch(spec: dict[str, Any], work: Path, prefix: list[str] | None = None):
    name = spec["name"]
    spec_path = work / "specs" / f"{name}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec["result"] = str(work / "results" / f"{name}.json")
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    logfile = open(work / "logs" / f"{name}.log", "w")  # noqa: SIM115 - closed by _wait
    command = (prefix or [sys.executable]) + [str(Path(__file__).resolve()), "--child", str(spec_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS=str(spec.get("threads", 1)), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.update(HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    return process, Path(spec["result"]), logfile


def _wait(handle, timeout: float) -> dict[str, Any]:
    process, result, logfile = handle
    try:
        rc = process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        process.kill()
        rc = process.wait()
    logfile.close()
    tail = Path(logfile.name).read_text()[-3000:]
    if rc == 0 and result.is_file():
        return {"ok": True, "rc": rc, **json.loads(result.read_text())}
    return {"ok": False, "rc": rc, "log_tail": tail}


def _runs(task: str, fidelity: dict[str, str]) -> list[dict[str, Any]]:
    """The methods of a task: (method, setting, mixing, pool, graph, extra)."""
    k = len(TASKS[task]["skills"])
    chain = [[1.0 if i == j else (0.5 if j == i + 1 else 0.0) for j in range(k)] for i in range(k)]
    runs = [
        {"method": "skill_it", "setting": "paper", "mixing": "skill_it", "pool": "balanced", "graph": chain},
        {"method": "stratified", "setting": "paper", "mixing": "stratified", "pool": "balanced", "graph": None},
        {"method": "random", "setting": "paper", "mixing": "random", "pool": "imbalanced", "graph": None},
    ]
    if fidelity and task == "lego":
        # Reference code: losses every max_steps / 120 steps, the window counts those evaluations, summed; its graph.
        extra = {fidelity["window_unit"]: "evaluations", fidelity["window_reduce"]: "sum"}
        runs.append(
            {
                "method": "skill_it_code",
                "setting": "code",
                "mixing": "skill_it",
                "pool": "balanced",
                "graph": CODE_LEGO_GRAPH,
                "extra": extra,
                "eval_every_field": fidelity["eval_every"],
            }
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny llama GGUF, a few steps (the CI test)")
    parser.add_argument("--out", default=None, help="output folder (default: $OUT, else outputs/gpu_results)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 480; smoke 150)")
    parser.add_argument("--lego-seeds", type=int, default=None, help="LEGO seeds (default 2; smoke 1)")
    parser.add_argument("--addition-seeds", type=int, default=None, help="addition seeds (default 1; smoke 1)")
    parser.add_argument("--gguf", default=None, help="the SmolLM2 GGUF (default: the fetch-model cache)")
    parser.add_argument("--gguf-parts", default=None, help="folder with part*/ pieces of the GGUF (see --pack)")
    parser.add_argument("--pack", default=None, metavar="DIR", help="split the GGUF and fetch wheels for the GPU")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    # Development: the GPU run's planning and sizes with the tiny model (and a smaller pool) on the CPU.
    parser.add_argument("--tiny-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    if args.pack:
        pack(Path(args.pack), Path(args.gguf) if args.gguf else None)
        return 0
    return parent_main(args)


def parent_main(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    out = Path(args.out or os.environ.get("OUT") or ROOT / "outputs" / "gpu_results")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="skillit_gpu_"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    budget = args.budget_s or (150.0 if args.smoke else 480.0)
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    report: dict[str, Any] = {
        "device": device,
        "smoke": args.smoke,
        "budget_s": budget,
        "command": " ".join(["python", *sys.argv]),
        "versions": _versions(),
        "settings": {
            "batch": 8 if args.smoke else BATCH,
            "lr": LR,
            "validation_per_skill": 16 if args.smoke else VALIDATION_PER_SKILL,
            "tasks": TASKS,
        },
    }
    log(f"device {device}; budget {budget:.0f} s; work {work}; out {out}")
    try:
        _run_everything(args, work, report, _START + budget, cuda)
    except BaseException:
        import traceback

        report["error"] = traceback.format_exc()  # into results.md too: the first try may be the only one
        raise
    finally:
        report["wall_s"] = round(time.time() - _START, 1)
        write_outputs(report, out)
        log(f"done in {report['wall_s']} s")
        (out / "log.txt").write_text("\n".join(_LOG) + "\n")
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r["name"] for r in report.get("runs", []) if not r.get("ok")]
    return 1 if failed or not report.get("timing", {}).get("ok") else 0


def _versions() -> dict[str, str]:
    import accelerate
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def _run_everything(args, work: Path, report: dict[str, Any], end: float, cuda: bool) -> None:
    smoke = args.smoke
    model_dir, report["model"] = prepare_model(args, work)
    log(f"model ready: {model_dir} (conversion {report['model']['convert_s']} s)")
    base = {
        "model": str(model_dir),
        "batch": report["settings"]["batch"],
        "validation_per_skill": report["settings"]["validation_per_skill"],
        "threads": 1,  # the device does the arithmetic; 11 processes x 2 threads would oversubscribe 16 cores
    }
    fidelity = _fidelity_fields()
    report["fidelity_options"] = fidelity or "not offered by this checkout's SkillItConfig: paper-text setting only"
    lego_seeds = args.lego_seeds or (1 if smoke else 2)
    addition_seeds = args.addition_seeds or 1
    validation = base["validation_per_skill"]
    pool = args.pool or (400 if smoke else 64_000)  # 64000: 2000 steps of batch 32 before a row repeats
    wanted = [("lego", s) for s in range(lego_seeds)] + [("addition", s) for s in range(addition_seeds)]
    # Every task and seed's data in its own process (encoding is Python-bound), LEGO seed 0 first for the timing run.
    spawn = multiprocessing.get_context("spawn")
    # Smoke: a few hundred rows, made in this process (worker start-up would cost more than the work).
    with (
        ProcessPoolExecutor(max_workers=min(len(wanted), 8), mp_context=spawn) if not smoke else _Inline() as executor
    ):
        futures = {
            key: executor.submit(_prepare_data_worker, key[0], str(model_dir), pool, key[1], str(work), validation)
            for key in wanted
        }
        lego0 = Path(futures[("lego", 0)].result())
        log("LEGO seed 0 data ready")

        # 1. Timing, alone on the device.
        timing_spec = {
            **base,
            "name": "timing",
            "kind": "timing",
            "task": "lego",
            "data": str(lego0),
            "seed": 0,
            "steps": 12 if smoke else 150,
            "warmup": 4 if smoke else 30,
            "rounds": 3 if smoke else 5,
            "stream_batches": 20 if smoke else 2000,
            "output_dir": str(work / "runs" / "timing"),
        }
        timing = _wait(_launch(timing_spec, work), end - time.time())
        report["timing"] = timing
        if not timing["ok"]:
            log(f"timing FAILED:\n{timing['log_tail']}")
            return
        log(
            f"timing: SkillItTrainer {timing['skillit_trainer']['samples_per_s']} samples/s (logits everywhere "
            f"{timing['skillit_trainer_all_logits']['samples_per_s']}), plain Trainer "
            f"{timing['plain_trainer']['samples_per_s']} samples/s ({timing['skillit_overhead_pct']:+.1f}%), stream "
            f"{timing['stream_samples_per_s']} samples/s ({timing['stream_over_training']}x)"
        )
        data = {key: Path(future.result()) for key, future in futures.items()}
    log("all data ready")

    # 2. FSDP smoke check beside the wave (it only needs to finish).
    fsdp_spec = {
        **base,
        "name": "fsdp",
        "kind": "fsdp",
        "data": str(lego0),
        "seed": 0,
        "steps": 4 if smoke else 10,
        "output_dir": str(work / "runs" / "fsdp"),
    }
    accelerate_cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    accelerate_cmd += [str(ROOT / "recipes" / "accelerate" / "fsdp_2gpu.yaml"), "--num_processes", "1"]
    accelerate_cmd += ["--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer"]
    if not cuda:
        accelerate_cmd += ["--mixed_precision", "no", "--cpu"]
    fsdp_handle = _launch(fsdp_spec, work, prefix=accelerate_cmd)
    report["fsdp_command"] = (
        "accelerate launch " + " ".join(accelerate_cmd[3:]) + " benchmarks/gpu/run.py --child SPEC"
    )

    # 3. One wave: every method of every seed of both tasks at once, sharing the device until the deadline.
    deadline = end - 30.0 if not smoke else end + 600.0  # leave time for the report; smoke: no deadline
    jobs = []
    for (task, seed), folder in data.items():
        spec = TASKS[task]
        evaluations = spec["rounds"] * (1 if smoke else 5)
        for run in _runs(task, fidelity):
            if smoke and task == "addition" and run["method"] != "skill_it":
                continue  # the smoke run only needs to exercise the addition path once
            name = f"{task}_{run['method']}_seed{seed}"
            jobs.append(
                {
                    **base,
                    **run,
                    "name": name,
                    "kind": "job",
                    "task": task,
                    "seed": seed,
                    "data": str(folder),
                    "evaluations": evaluations,
                    "multiple": evaluations,
                    "max_steps": 2 * evaluations if smoke else 6000,  # the paper's 6000 at most
                    "calibration_steps": 6 if smoke else 40,
                    "deadline": deadline,
                    # The smoke run checks the machinery, not the clock: fixed steps on a possibly loaded CPU.
                    "fixed_steps": smoke,
                    "barrier": str(work / "barrier"),
                    "barrier_timeout_s": 120.0 if smoke else 180.0,
                    "output_dir": str(work / "runs" / name),
                }
            )
    for job in jobs:
        job["wave_size"] = len(jobs)
    handles = [(job, _launch(job, work)) for job in jobs]
    log(f"wave of {len(jobs)} processes until {deadline - _START:.0f} s: {', '.join(j['name'] for j in jobs)}")
    report["runs"] = []
    for job, handle in handles:
        outcome = _wait(handle, deadline + 25.0 - time.time())
        if outcome["ok"]:
            log(
                f"  {job['name']}: {outcome['steps_done']}/{outcome['steps']} steps, {outcome['samples_per_s']} "
                f"samples/s (calibrated {outcome['calibrated_steps_per_s']} steps/s)"
            )
        else:
            log(f"  {job['name']} FAILED (rc {outcome['rc']}):\n{outcome['log_tail'][-1500:]}")
        report["runs"].append({**{k: job[k] for k in ("name", "task", "method", "seed", "setting")}, **outcome})
    report["fsdp"] = _wait(fsdp_handle, end - time.time())
    log(f"FSDP check: {'ok' if report['fsdp']['ok'] else 'FAILED'} {report['fsdp'].get('distributed_type', '')}")


# ----- report -------------------------------------------------------------------------------------------------


def _summary(runs: list[dict[str, Any]], task: str) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """Per method (and setting): loss and accuracy per skill at the last step every paper-setting run of the task
    reached (a run that stopped earlier is shown at its own last step, which its row names), mean and sample std
    over seeds."""
    done = [r for r in runs if r.get("ok") and r["task"] == task and r["curve"]]
    if not done:
        return None, {}
    paper = [r for r in done if r["setting"] == "paper"] or done
    common = min(r["curve"][-1]["step"] for r in paper)
    table: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in done):
        mine = [r for r in done if r["method"] == method]
        points = [max((p for p in r["curve"] if p["step"] <= common), key=lambda p: p["step"]) for r in mine]
        row: dict[str, Any] = {
            "setting": mine[0]["setting"],
            "seeds": [r["seed"] for r in mine],
            "step": min(p["step"] for p in points),
            "rounds_done": min(len(r["trajectory"]) for r in mine),
        }
        for metric in ("loss", "accuracy"):
            row[metric] = {skill: _mean_std([p[metric][skill] for p in points]) for skill in TASKS[task]["skills"]}
            row[f"mean_{metric}"] = _mean_std([statistics.fmean(p[metric].values()) for p in points])
        table[method] = row
    return common, table


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else float("nan")}


def _cell(value: dict[str, float], digits: int = 3) -> str:
    if math.isnan(value["std"]):
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    runs = report.get("runs", [])
    for task in TASKS:
        step, table = _summary(runs, task)
        if table:
            planned = sorted({r["steps"] for r in runs if r.get("ok") and r["task"] == task})
            report.setdefault("summary", {})[task] = {"common_step": step, "steps": planned, "methods": table}
            _plot(runs, task, out / f"{task}_curves.png")
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "results.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Skill-It on {report.get('model', {}).get('name', '?')}: {report['device']}",
        "",
        f"Command: `{report['command']}`; wall time {report.get('wall_s', '?')} s of a {report['budget_s']:.0f} s "
        f"budget; versions {report['versions']}.",
        f"Model: {report.get('model', {}).get('source', 'not prepared')}.",
        "",
    ]
    timing = report.get("timing", {})
    if timing.get("ok"):
        lines += [
            "## SkillItTrainer against a plain Trainer (fixed uniform mixture, one process)",
            "",
            "| trainer | s/step | samples/s |",
            "|---|---|---|",
            f"| SkillItTrainer (LM head at the scored positions, its default) | {timing['skillit_trainer']['s_per_step']} "
            f"| {timing['skillit_trainer']['samples_per_s']} |",
            f"| SkillItTrainer, logits everywhere | {timing['skillit_trainer_all_logits']['s_per_step']} "
            f"| {timing['skillit_trainer_all_logits']['samples_per_s']} |",
            f"| transformers.Trainer | {timing['plain_trainer']['s_per_step']} | {timing['plain_trainer']['samples_per_s']} |",
            "",
            f"Overhead of SkillItTrainer's data path and rounds (same computation as Trainer): "
            f"{timing['skillit_overhead_pct']:+.1f}% per step; logits at the scored positions only: "
            f"{timing['scored_logits_speedup']}x faster steps ({timing['steps']} steps, first {timing['warmup']} not "
            f"timed, batch {timing['batch']}). One round-end evaluation (every skill's validation rows): "
            f"{timing['round_eval_s']} s.",
            f"Mixture stream (the trainer's DataLoader, collation included): {timing['stream_samples_per_s']} "
            f"samples/s = {timing['stream_over_training']}x the training rate above.",
            "",
        ]
    elif timing:
        lines += ["## Timing run FAILED", "", "```", timing.get("log_tail", "")[-2000:], "```", ""]
    for task, summary in report.get("summary", {}).items():
        skills = TASKS[task]["skills"]
        spec = TASKS[task]
        lines += [
            f"## {task}: validation at step {summary['common_step']} (the last step every paper-setting run reached)",
            "",
            f"eta {spec['eta']}, T {spec['rounds']}, w {spec['window']}, batch {report['settings']['batch']}, "
            f"lr {LR}, {summary['steps']} steps planned; "
            "setting `paper`: window of w rounds, summed, chain graph (diagonal 1, i -> i+1 of 0.5); setting "
            "`code`: the reference code's (window of w evaluations every steps/120, its LEGO graph). Random draws from "
            f"the imbalanced pool {spec['random']}. Mean ± sample std over seeds.",
            "",
            "| method | setting | seeds | step | rounds done | "
            + " | ".join(f"acc {s}" for s in skills)
            + " | mean acc | "
            + " | ".join(f"loss {s}" for s in skills)
            + " | mean loss |",
            "|---|---|---|---|---|" + "---|" * (2 * len(skills) + 2),
        ]
        for method, row in summary["methods"].items():
            cells = [_cell(row["accuracy"][s], 2) for s in skills] + [_cell(row["mean_accuracy"], 3)]
            cells += [_cell(row["loss"][s], 3) for s in skills] + [_cell(row["mean_loss"], 3)]
            lines.append(
                f"| {method} | {row['setting']} | {len(row['seeds'])} | {row['step']} | {row['rounds_done']} | "
                + " | ".join(cells)
                + " |"
            )
        lines += ["", f"Curves: {task}_curves.png.", ""]
    if report.get("error"):
        lines += ["## The run stopped with an error", "", "```", report["error"][-3000:], "```", ""]
    failed = [r for r in report.get("runs", []) if not r.get("ok")]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['name']}: rc {r['rc']}" for r in failed] + [""]
    fsdp = report.get("fsdp")
    if fsdp is not None:
        status = "passed" if fsdp.get("ok") and fsdp.get("losses_finite") else "FAILED"
        lines += [
            "## FSDP smoke check (accelerate, one process)",
            "",
            f"`{report.get('fsdp_command', '')}`: {status}; distributed type {fsdp.get('distributed_type', '?')}, "
            f"FSDP enabled in the trainer: {fsdp.get('fsdp_enabled', '?')}, "
            f"parameters sharded (DTensor): {fsdp.get('sharded_parameters', '?')}, rounds {fsdp.get('rounds', '?')}.",
            "",
        ]
        if not fsdp.get("ok"):
            lines += ["```", fsdp.get("log_tail", "")[-2000:], "```", ""]
    return "\n".join(lines)


def _plot(runs: list[dict[str, Any]], task: str, path: Path) -> None:
    from matplotlib.figure import Figure

    skills = TASKS[task]["skills"]
    figure = Figure(figsize=(3.2 * len(skills), 5.6))
    axes = figure.subplots(2, len(skills), squeeze=False)
    done = [r for r in runs if r.get("ok") and r["task"] == task]
    for method in dict.fromkeys(r["method"] for r in done):
        mine = [r for r in done if r["method"] == method]
        for column, skill in enumerate(skills):
            for row, metric in enumerate(("loss", "accuracy")):
                for i, r in enumerate(mine):
                    steps = [p["step"] for p in r["curve"]]
                    values = [p[metric][skill] for p in r["curve"]]
                    axes[row][column].plot(
                        steps,
                        values,
                        color=f"C{list(dict.fromkeys(x['method'] for x in done)).index(method)}",
                        alpha=0.8,
                        label=method if i == 0 else None,
                    )
                axes[row][column].set_title(f"skill {skill}: {metric}", fontsize=9)
                axes[row][column].set_xlabel("step", fontsize=8)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
