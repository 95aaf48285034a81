"""How many torch CPU threads a training step of a small model wants: the measurement behind
`SkillItConfig.single_thread_max_params`.

For tiny GPT-NeoX models of growing size, time the median optimizer step (forward, backward, AdamW) on LEGO k = 3
batches of 32 with 1 thread and with every core, in fresh processes so each thread count starts clean.

    python benchmarks/overhead/threads.py [--steps 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = [(128, 2), (256, 4), (512, 4), (768, 6)]  # (hidden_size, num_layers)


def measure(hidden: int, layers: int, threads: int, steps: int) -> dict:
    import torch

    from hf_skillit.collator import LMCollator
    from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config

    torch.set_num_threads(threads)
    tokenizer = build_tokenizer()
    data = encode(make_lego(32 * (steps + 3), k=3, seed=0), tokenizer)
    config = tiny_model_config(tokenizer=tokenizer, hidden_size=hidden, num_layers=layers, num_heads=4)
    model = make_tiny_model(config, seed=0)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collate = LMCollator(tokenizer.pad_token_id)
    columns = ["input_ids", "attention_mask", "labels"]
    times = []
    for step in range(steps + 3):
        rows = data.select(range(32 * step, 32 * (step + 1))).select_columns(columns)
        batch = collate(list(rows))
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return {
        "hidden": hidden,
        "layers": layers,
        "params": params,
        "threads": threads,
        "median_step_s": statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)  # hidden layers threads: child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps)))
        return
    load = os.getloadavg()
    print(f"# {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| params | hidden x layers | " + " | ".join(f"{t} thread(s), s/step" for t in args.threads) + " |")
    print("|---|---|" + "---|" * len(args.threads))
    for hidden, layers in SIZES:
        rows = []
        for threads in args.threads:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--steps",
                    str(args.steps),
                    "--one",
                    str(hidden),
                    str(layers),
                    str(threads),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        cells = " | ".join(f"{r['median_step_s']:.4f}" for r in rows)
        print(f"| {rows[0]['params'] / 1e6:.2f} M | {hidden} x {layers} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
