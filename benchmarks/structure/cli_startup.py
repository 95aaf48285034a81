"""How fast `hf-skillit train` answers a dry run and a recipe error, before and after a change (issue 24).

    OMP_NUM_THREADS=1 python benchmarks/structure/cli_startup.py --before /tmp/before [--after .] [--repeat 3]

`--before` and `--after` are checkouts of the repository (e.g. `git worktree add /tmp/before <commit>`). Each
command runs in a fresh interpreter from the checkout's directory with `PYTHONPATH` set to it, so the checkout's
code runs; the two checkouts alternate, `--repeat` times. The wall time includes the interpreter's start. Each run
also reports whether torch ended up imported. Prints a table (median and range of the wall times) and the load
average before and after (`os.getloadavg`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "recipes/lego_pretrain.yaml"

# name -> the `hf-skillit` arguments; {user} is a recipe over two jsonl files written at start.
COMMANDS = {
    "dry run, LEGO (30k rows)": ["train", RECIPE, "--dry-run"],
    "dry run, fold (96k rows)": ["train", "recipes/fold_pretrain.yaml", "--dry-run"],
    "dry run, two jsonl files": ["train", "{user}", "--dry-run"],
    "dry run, null removes a key": ["train", RECIPE, "--dry-run", "--set", "model.tiny.max_position_embeddings=null"],
    "dry run, save_strategy=no (YAML False)": ["train", RECIPE, "--dry-run", "--set", "training.save_strategy=no"],
    "error: unknown key": ["train", RECIPE, "--set", "training.max_stpes=5"],
    "error: bad choice": ["train", RECIPE, "--set", "training.mixing=skillit"],
    "error: wrong type": ["train", RECIPE, "--set", "training.max_steps=many"],
    "error: YAML boolean on a choice": ["train", RECIPE, "--set", "training.lr_scheduler_type=yes"],
    "error: max_steps not a multiple of rounds": ["train", RECIPE, "--set", "training.max_steps=1501"],
}

PROBE = (
    "import sys, json; from hf_skillit.cli import main; rc = main(json.loads(sys.argv[1])); "
    "print(json.dumps([rc, 'torch' in sys.modules]), file=sys.stderr)"
)


def user_recipe(root: Path) -> str:
    import yaml

    for skill in ("a", "b"):
        rows = "".join(json.dumps({"text": f"{skill} " * (i % 50 + 1)}) + "\n" for i in range(2000))
        (root / f"{skill}.jsonl").write_text(rows)
    raw = {
        "model": {"name_or_path": "gpt2"},
        "data": {"train_files": {s: str(root / f"{s}.jsonl") for s in ("a", "b")}},
        "graph": {"matrix": [[1.0, 0.5], [0.0, 1.0]]},
        "training": {"output_dir": str(root / "run"), "max_steps": 60, "rounds": 3, "max_length": 64},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return str(root / "recipe.yaml")


def run(checkout: Path, argv: list[str]) -> tuple[float, int, bool]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], cwd=checkout, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    rc, torch = json.loads(done.stderr.strip().splitlines()[-1])
    return wall, rc, torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[tuple[float, int, bool]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        user = user_recipe(Path(tmp))
        for name, argv in COMMANDS.items():
            argv = [user if a == "{user}" else a for a in argv]
            for _ in range(args.repeat):
                for label, checkout in (("before", args.before), ("after", args.after)):
                    results.setdefault((name, label), []).append(run(checkout.resolve(), argv))
    print(f"load average at start {load_before[0]:.1f}, at end {os.getloadavg()[0]:.1f}; {args.repeat} runs each")
    print()
    print("| command | exit | before: wall s, median (range) | torch | after: wall s, median (range) | torch |")
    print("|---|---|---|---|---|---|")
    for name in COMMANDS:
        cells = []
        for label in ("before", "after"):
            runs = results[(name, label)]
            walls = [w for w, _, _ in runs]
            cells.append(f"{statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})")
            cells.append("yes" if any(t for _, _, t in runs) else "no")
        codes = sorted({rc for label in ("before", "after") for _, rc, _ in results[(name, label)]})
        print(f"| {name} | {'/'.join(map(str, codes))} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
