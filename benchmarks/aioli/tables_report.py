"""What Aioli did in the SmolLM2 LEGO tables (issue 25): its mixture and the mixing law A it estimated, per round.

Reads the Aioli runs of one `benchmarks/smollm2/tables.py` output directory (`runs/aioli_seed<s>.json`, which keep
each round's p and A) and prints, per round, the mean ± sample std over seeds of every skill's weight and of every
entry of A (rows: training skills, columns: the validation skills Aioli optimises: skill 3 in fine-tuning, all in
pre-training), and the smallest and largest weight of any skill in any round.

    python benchmarks/aioli/tables_report.py runs/issue25/smollm2_finetune_aioli
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def report(folder: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("aioli_seed*.json"))]
    if not runs:
        raise SystemExit(f"no Aioli run in {folder / 'runs'}")
    seeds = [r["seed"] for r in runs]
    rounds = [r["p"] for r in runs]
    skills = sorted(rounds[0][0]["p"])
    targets = sorted(next(iter(rounds[0][0]["A"].values())))
    lines = [f"Aioli runs of {folder}: seeds {seeds}", ""]
    header = ["step", *(f"p_{s}" for s in skills), *(f"A[{t}->{e}]" for t in skills for e in targets)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, first in enumerate(rounds[0]):
        records = [r[i] for r in rounds]
        cells = [mean_std([rec["p"][s] for rec in records]) for s in skills]
        cells += [mean_std([rec["A"][t][e] for rec in records]) for t in skills for e in targets]
        lines.append("| " + " | ".join([str(first["step"]), *cells]) + " |")
    weights = [rec["p"][s] for r in rounds for rec in r for s in skills]
    lines += ["", f"Weights over all rounds and seeds: {min(weights):.3f} to {max(weights):.3f}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    print(report(parser.parse_args().folder))


if __name__ == "__main__":
    main()
