"""The paper's LEGO / addition comparisons on a pretrained SmolLM2-135M, on one GPU, in one command (issues 12, 20).

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
3. **FSDP check** (issues 16, 22): `accelerate launch` with `recipes/accelerate/fsdp_2gpu.yaml`, one process on
   the one GPU, llama layers wrapped: 2 rounds of `SkillItTrainer` on training rows cut to different lengths;
   reports whether FSDP was really enabled and whether round 0 (the evaluation before the first step) saw the
   model as the later rounds did (module class, DTensor weights, device, autocast).
4. **LEGO k = 5 continual pre-training** (paper §4.1, Appendix C.3: every weight trained, batch 32, lr 5e-5, AdamW,
   weight decay 0.01, eta 0.5, T 6, w 3, answer-only loss, 100 validation rows per skill): Skill-It against
   skill-stratified and random sampling. Random draws from an imbalanced pool (1:1:1:3:5, the paper's); the others
   from a balanced pool. Every method of a seed starts from the same weights. Where `SkillItConfig` offers the
   reference code's variants (window counted in evaluations, window averaged), the code-faithful setting runs
   beside the paper-text one; every table says which setting it used. `--addition-seeds N` adds **addition**
   (3 digits, eta 0.1, T 5).
5. **LEGO k = 5 fine-tuning on target skill 3** (paper §4.2, issue 20) at the settings the CPU work of issue 20
   chose (`settings.py`, "fine-tuning": LoRA r16 on q/k/v/o through the recipes' own peft path, lr 5e-4, batch 8,
   bf16 autocast; Skill-It's eta and window from its grid; the reasoning chain as graph, k = 5 having no learned
   one): Skill-It against target-only (fixed weights {"3": 1}) and skill-stratified (the target and its
   prerequisite), up to the paper's 6000 steps, every skill validated (the target and the others: a target learned
   by a shortcut that breaks the others shows). Tables in the CPU tables' format: per skill, steps to loss 0.3 and
   0.1 and the loss at the last step every run reached.

**How the tables share the budget and the device: one wave.** Every training process of every table (2 seeds x 4
pre-training methods, 2 seeds x 3 fine-tuning methods: 14 by default) starts at once after the timing and runs
until the same deadline, beside the FSDP check. A step of batch 32 or 8 of a 135M model is a few milliseconds of
GPU arithmetic behind tens of milliseconds of Python launching kernels, so one process leaves the GPU mostly idle
and parallel processes fill it; run in turn, each table would get half the wall time with the same idle device.
The processes load, then calibrate together (a few steps on a copy of the model and one evaluation, all under the
contention of the whole wave); **each table** then plans its own number of steps from its slowest process (a LoRA
step of batch 8 is not a full step of batch 32): the largest multiple of T x 5 evaluations that fits 85% of the
time left minus the evaluations, at most 6000. A wall-clock deadline in every process stops any whose plan was too
optimistic, and each table is read at the last step all its runs reached. The wave is sized to the machine's 16
cores (one thread a process, and each process's Python is what keeps its share of the GPU busy): 14 training
processes, the FSDP check and this parent. That is why addition, outside issue 20's tables, is off by default
(`--addition-seeds 1` adds 3 processes), and why the fine-tuning table has 2 seeds (`--finetune-seeds`).

The modules beside this one, by job: `settings.py` (every setting above, in one place), `model_files.py`,
`data.py`, `jobs.py` (the child processes) and `report.py`.

Outputs (in `$OUT`, else `--out`): `results.json` (everything), `results.md` (tables, settings, commands),
`lego_curves.png` / `finetune_curves.png` / `addition_curves.png` (per-skill validation loss and accuracy against
steps), `log.txt`.

Moving the model to a GPU machine that reaches no registry: the GGUF is 98 MB and one call carries at most 64 MiB,
so `--pack DIR` splits it into two parts (and stores the wheels the GPU image lacks) for two calls on the same warm
machine; see docs/pretrained.md, "GPU run".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runs from a checkout without installing hf_skillit; benchmarks.gpu.* from there too
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu import settings  # noqa: E402
from benchmarks.gpu.data import _prepare_data_worker  # noqa: E402
from benchmarks.gpu.jobs import _fidelity_fields, child_main  # noqa: E402
from benchmarks.gpu.model_files import pack, prepare_model  # noqa: E402
from benchmarks.gpu.report import write_outputs  # noqa: E402
from benchmarks.gpu.settings import BATCH, CODE_LEGO_GRAPH, LR, TASKS, VALIDATION_PER_SKILL  # noqa: E402

_START = time.time()
_LOG: list[str] = []


def log(message: str) -> None:
    line = f"[{time.time() - _START:7.1f}s] {message}"
    print(line, flush=True)
    _LOG.append(line)


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


def _chain(k: int) -> list[list[float]]:
    """The LEGO reasoning chain of `k` skills: diagonal 1, i -> i+1 of 0.5."""
    return [[1.0 if i == j else (0.5 if j == i + 1 else 0.0) for j in range(k)] for i in range(k)]


def _runs(task: str, fidelity: dict[str, str]) -> list[dict[str, Any]]:
    """The pre-training methods of a task: (method, setting, mixing, pool, graph, extra) and the task's table
    settings."""
    spec = TASKS[task]
    chain = _chain(len(spec["skills"]))
    table = {"table": task, "rounds": spec["rounds"], "eta": spec["eta"], "window": spec["window"]}
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
    return [{**run, **table} for run in runs]


def _finetune_runs() -> list[dict[str, Any]]:
    """The fine-tuning methods (LEGO k = 5, target skill 3, LoRA; settings.py): every method with the chain graph
    and the target, as the CPU tables' recipe runs them, from the balanced pool of the pre-training's data."""
    table = {
        "table": "finetune",
        "setting": "paper",
        "pool": "balanced",
        "graph": _chain(len(TASKS["lego"]["skills"])),
        "rounds": settings.FINETUNE_ROUNDS,
        "eta": settings.FINETUNE_ETA,
        "window": settings.FINETUNE_WINDOW,
        "lora": settings.FINETUNE_LORA,
        "lr": settings.FINETUNE_LR,
        "batch": settings.FINETUNE_BATCH,
    }
    runs = []
    for method, fields in settings.FINETUNE_METHODS.items():
        extra = {**{k: v for k, v in fields.items() if k != "mixing"}, "target_skills": [settings.FINETUNE_TARGET]}
        runs.append({**table, "method": method, "mixing": fields["mixing"], "extra": extra})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny llama GGUF, a few steps (the CI test)")
    parser.add_argument("--out", default=None, help="output folder (default: $OUT, else outputs/gpu_results)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 480; smoke 150)")
    parser.add_argument("--lego-seeds", type=int, default=None, help="LEGO seeds (default 2; smoke 1)")
    parser.add_argument("--finetune-seeds", type=int, default=None, help="fine-tuning seeds (default 2; smoke 1)")
    parser.add_argument("--addition-seeds", type=int, default=None, help="addition seeds (default 0; smoke 1)")
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
            "finetune": {
                "target": settings.FINETUNE_TARGET,
                "lora": settings.FINETUNE_LORA,
                "lr": settings.FINETUNE_LR,
                "batch": settings.FINETUNE_BATCH,
                "eta": settings.FINETUNE_ETA,
                "window": settings.FINETUNE_WINDOW,
                "rounds": settings.FINETUNE_ROUNDS,
                "max_steps": settings.FINETUNE_MAX_STEPS,
                "methods": settings.FINETUNE_METHODS,
                "graph": "LEGO reasoning chain (diagonal 1, i -> i+1 of 0.5)",
            },
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
    finetune_seeds = args.finetune_seeds or (1 if smoke else 2)
    addition_seeds = args.addition_seeds if args.addition_seeds is not None else (1 if smoke else 0)
    validation = base["validation_per_skill"]
    pool = args.pool or (400 if smoke else 64_000)  # 64000: 2000 steps of batch 32 before a row repeats
    # Fine-tuning trains on the LEGO pools of its seed (its own draws: target-only takes skill 3's rows alone).
    lego_data = max(lego_seeds, finetune_seeds)
    wanted = [("lego", s) for s in range(lego_data)] + [("addition", s) for s in range(addition_seeds)]
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

    # 3. One wave: every method of every seed of every table at once, sharing the device until the deadline.
    deadline = end - 30.0 if not smoke else end + 600.0  # leave time for the report; smoke: no deadline
    jobs = []
    pretraining = [key for key in data if key[0] != "lego" or key[1] < lego_seeds]
    wave = [(task, seed, run) for (task, seed) in pretraining for run in _runs(task, fidelity)]
    wave += [("lego", seed, run) for seed in range(finetune_seeds) for run in _finetune_runs()]
    for task, seed, run in wave:
        if smoke and task == "addition" and run["method"] != "skill_it":
            continue  # the smoke run only needs to exercise the addition path once
        evaluations = run["rounds"] * (1 if smoke else 5)
        finetune = run["table"] == "finetune"
        name = f"{'finetune' if finetune else task}_{run['method']}_seed{seed}"
        jobs.append(
            {
                **base,
                **run,
                "name": name,
                "kind": "job",
                "task": task,
                "seed": seed,
                "data": str(data[(task, seed)]),
                "evaluations": evaluations,
                "multiple": evaluations,
                # the paper's 6000 at most
                "max_steps": 2 * evaluations if smoke else (settings.FINETUNE_MAX_STEPS if finetune else 6000),
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
        keys = ("name", "task", "table", "method", "seed", "setting", "rounds", "batch")
        report["runs"].append({**{k: job[k] for k in keys}, **outcome})
    # By the wave's deadline, as the jobs (smoke: no deadline, so a loaded CI machine does not cut the check short).
    report["fsdp"] = _wait(fsdp_handle, deadline + 25.0 - time.time())
    log(f"FSDP check: {'ok' if report['fsdp']['ok'] else 'FAILED'} {report['fsdp'].get('distributed_type', '')}")


if __name__ == "__main__":
    sys.exit(main())
