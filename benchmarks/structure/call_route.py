"""The route of one recipe run through the package's layers: how often a call climbs back up (issue 24).

    OMP_NUM_THREADS=1 python benchmarks/structure/call_route.py [--recipe recipes/fold_pretrain.yaml] [--steps 4]

The layers are read from the imports (the same reader as `tests/test_import_cycles.py`, which keeps them acyclic):
a module's layer is one more than the highest layer it imports, so `names.py` sits at the bottom and `cli.py` at the
top. The run is `recipes.build.make_trainer(recipe)` then `recipes.report.train_and_report` on a few steps, traced
with `sys.setprofile`. Every direct call from a function of one hf_skillit module into a function of another is a
step of the route; it **climbs** when the callee's layer is above the caller's: a lower module calling code it does
not import (a registered class, an object handed down). Each call site (caller function -> callee function) counts
once, however often it runs, so the count reads like the call chain read by hand.

Calls that reach hf_skillit from transformers (the Trainer's loop calling an overridden `training_step` or a
callback) are the framework's hooks, not a climb of ours; they are counted apart, as "through the Trainer", when
the nearest hf_skillit frame below them is in a lower layer (e.g. a mixin's `train` calling `super().train()`,
which calls the subclass's `training_step`). Prints both lists and counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_import_cycles import import_graph  # noqa: E402


def layers() -> dict[str, int]:
    graph = import_graph()
    rank: dict[str, int] = {}

    def layer(module: str) -> int:
        if module not in rank:
            rank[module] = 1 + max((layer(m) for m in graph[module]), default=-1)
        return rank[module]

    for module in graph:
        layer(module)
    return rank


def trace_run(recipe_path: str, steps: int) -> list[tuple[str, str, str, str, bool]]:
    """The call sites (caller module, caller function, callee module, callee function, direct) between hf_skillit
    modules, in the order first seen; `direct` is False when library frames stand between them."""
    from hf_skillit.recipes import load_recipe, make_trainer, train_and_report

    output_dir = tempfile.mkdtemp(prefix="call_route_")
    overrides = [
        f"training.output_dir={output_dir}",
        f"training.max_steps={steps}",
        "training.rounds=2",
        "training.save_strategy=no",
        "data.num_train_samples=256",
        "data.validation_per_skill=8",
    ]
    recipe = load_recipe(recipe_path, overrides)
    seen: dict[tuple[str, str, str, str, bool], None] = {}

    def module_of(frame) -> str | None:
        name = frame.f_globals.get("__name__", "")
        return name if name == "hf_skillit" or name.startswith("hf_skillit.") else None

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = module_of(frame)
        if callee is None:
            return
        caller = frame.f_back
        direct = caller is not None and module_of(caller) is not None
        while caller is not None and module_of(caller) is None:
            caller = caller.f_back  # through library frames (a Trainer calling a callback) to our caller
        if caller is None or module_of(caller) == callee:
            return
        seen.setdefault((module_of(caller), caller.f_code.co_name, callee, frame.f_code.co_name, direct), None)

    sys.setprofile(profile)
    try:
        trainer = make_trainer(recipe)
        train_and_report(trainer, recipe)
    finally:
        sys.setprofile(None)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/fold_pretrain.yaml")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    os.chdir(ROOT)
    rank = layers()
    route = trace_run(args.recipe, args.steps)
    upward = [site for site in route if rank[site[2]] > rank[site[0]]]
    climbs = [site for site in upward if site[4]]
    print(f"{sum(site[4] for site in route)} direct call sites between hf_skillit modules; layers from the imports")
    print("(0 = bottom)")
    print()
    print("| caller (layer) | callee (layer) | how |")
    print("|---|---|---|")
    for caller, caller_fn, callee, callee_fn, direct in upward:
        short = lambda m: m.removeprefix("hf_skillit.")  # noqa: E731
        how = "climb" if direct else "through the Trainer"
        print(
            f"| {short(caller)}.{caller_fn} ({rank[caller]}) | {short(callee)}.{callee_fn} ({rank[callee]}) | {how} |"
        )
    print()
    print(f"climbs: {len(climbs)} call sites; through the Trainer: {len(upward) - len(climbs)}")


if __name__ == "__main__":
    main()
