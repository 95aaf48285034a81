"""How fast SmolLM2-135M trains on LEGO k = 3 on this CPU, against the machine's measured matmul peak (issue 20).

For each setting (threads, LoRA r16 on q/k/v/o or full fine-tuning, float32 or bf16 autocast, batch size) the
script times optimizer steps exactly as `SkillItTrainer` takes them: answer-only labels, the LM head at the scored
positions only (`hf_skillit.evaluation.keep_scored_logits`), fused AdamW, bf16 as the Trainer's CPU autocast
(`torch.autocast("cpu", torch.bfloat16)`, weights in float32). Evaluation is timed through the trainer's own
`per_skill_loss`. The FLOPs of one step are counted by `torch.utils.flop_counter.FlopCounterMode` on an untimed
step (matmuls and attention), so "GFLOP/s" is what the step really asked of the GEMMs; the peak is a square
2048^3 GEMM measured in the same process, in float32 and in bf16, at the same thread count.

    OMP_NUM_THREADS=1 python benchmarks/smollm2/speed.py [--steps 4] [--threads 1 2]

Each thread count runs in a fresh process (torch's thread pool is process-wide). The model is
`hf-skillit fetch-model smollm2-135m` (fetched on first use). Rows: LEGO k = 3 encoded with SmolLM2's tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

# (name, lora, bf16, batch): the rows of the table, in the order printed.
SETTINGS = [
    ("LoRA r16, fp32, b8", True, False, 8),
    ("LoRA r16, fp32, b16", True, False, 16),
    ("LoRA r16, bf16, b8", True, True, 8),
    ("LoRA r16, bf16, b16", True, True, 16),
    ("full, fp32, b8", False, False, 8),
    ("full, bf16, b8", False, True, 8),
]
EVAL_ROWS = 100  # one evaluation batch of 100 rows (per_device_eval_batch_size of the recipes)


def gemm_peak(dtype, size: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of a square `size`^3 matmul in `dtype` over `reps` tries."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def train_step(model, optimizer, batch: dict, autocast) -> None:
    """One optimizer step as `SkillItTrainer` takes it: logits at the scored positions only, then fused AdamW."""
    from hf_skillit.evaluation import keep_scored_logits

    inputs = keep_scored_logits(model, batch)
    with autocast:
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def time_work(work, repeats: int) -> tuple[int, float]:
    """(FLOPs of one call, median seconds of `repeats` calls) of `work(i)`: call 0 warms up, call 1 is counted by
    `FlopCounterMode` (untimed: counting slows it), calls 2 .. repeats + 1 are timed."""
    from torch.utils.flop_counter import FlopCounterMode

    work(0)
    with FlopCounterMode(display=False) as counter:
        work(1)
    times = []
    for i in range(2, repeats + 2):
        start = time.perf_counter()
        work(i)
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(times)


def rate_row(setting: str, threads: int, rows: int, flops: int, seconds: float, peak: float) -> dict:
    """A line of the table: `rows` samples (or evaluation rows) of `flops` in `seconds`, against `peak` GFLOP/s."""
    return {
        "setting": setting,
        "threads": threads,
        "s_per_step": round(seconds, 3),
        "samples_per_s": round(rows / seconds, 2),
        "gflop_per_step": round(flops / 1e9, 1),
        "gflops": round(flops / seconds / 1e9, 1),
        "peak_fraction": round(flops / seconds / 1e9 / peak, 3),
    }


def measure(threads: int, steps: int, names: list[str] | None = None) -> list[dict]:
    import torch

    from hf_skillit.collator import LMCollator
    from hf_skillit.evaluation import per_skill_loss
    from hf_skillit.pretrained import load_pretrained
    from hf_skillit.synthetic import encode, make_lego

    torch.set_num_threads(threads)
    rows = [
        {"setting": f"GEMM 2048^3 {name}", "threads": threads, "peak_gflops": round(gemm_peak(dtype), 1)}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    ]
    peak = {"fp32": rows[0]["peak_gflops"], "bf16": rows[1]["peak_gflops"]}
    _, tokenizer = load_pretrained("smollm2-135m")
    need = max(batch for *_, batch in SETTINGS) * (steps + 3) + EVAL_ROWS
    data = encode(make_lego(need, k=3, seed=0), tokenizer).select_columns(["input_ids", "attention_mask", "labels"])
    tokens = sum(len(r) for r in data["input_ids"]) / len(data)
    collate = LMCollator(tokenizer.pad_token_id)

    def autocast(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    settings = [s for s in SETTINGS if names is None or s[0] in names]
    for row in rows:
        print(json.dumps(row), file=sys.stderr, flush=True)
    for name, lora, bf16, batch in settings:
        model, _ = load_pretrained("smollm2-135m")
        if lora:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
            )
            model = get_peft_model(model, config)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)

        batches = [collate(list(data.select(range(batch * i, batch * (i + 1))))) for i in range(steps + 2)]
        # time_work calls the lambdas at once, before the loop variables move on.
        flops, seconds = time_work(lambda i: train_step(model, optimizer, batches[i], autocast(bf16)), steps)  # noqa: B023
        precision = "bf16" if bf16 else "fp32"
        row = rate_row(name, threads, batch, flops, seconds, peak[precision])
        rows.append({**row, "trainable": sum(p.numel() for p in trainable)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        # Evaluation rows/s: the same forward for LoRA and full models, so measured once per precision.
        if lora and batch == settings[0][3]:
            validation = {"3": data.select(range(len(data) - EVAL_ROWS, len(data)))}
            kwargs = dict(collator=collate, batch_size=EVAL_ROWS, device=torch.device("cpu"))
            kwargs["autocast"] = lambda bf16=bf16: autocast(bf16)
            flops, seconds = time_work(lambda i: per_skill_loss(model, validation, **kwargs), 3)  # noqa: B023
            rows.append(
                rate_row(f"eval {EVAL_ROWS} rows, {precision}", threads, EVAL_ROWS, flops, seconds, peak[precision])
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for row in rows:
        row["tokens_per_row"] = round(tokens, 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting (median), after 2 untimed")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--settings", nargs="+", default=None, help="names of SETTINGS to run (default: all)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.steps, args.settings)))
        return
    rows = []
    for threads in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(threads), "--steps", str(args.steps)]
            + (["--settings", *args.settings] if args.settings else []),
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"tokens per row: {rows[0]['tokens_per_row']}")
    print("| setting | threads | s/step (median) | samples/s | GFLOP/step | GFLOP/s | fraction of peak |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "peak_gflops" in row:
            print(f"| {row['setting']} | {row['threads']} | | | | {row['peak_gflops']} (peak) | 1 |")
        else:
            print(
                f"| {row['setting']} | {row['threads']} | {row['s_per_step']} | {row['samples_per_s']} | "
                f"{row['gflop_per_step']} | {row['gflops']} | {row['peak_fraction']:.2f} |"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
