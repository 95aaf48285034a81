"""Skill discovery: recover skills from unlabelled samples by clustering their loss trajectories.

Skill-It §2.3 and Appendix D.2: samples of one skill are learned at the same time, so their validation losses follow
similar trajectories as a model trains. [`loss_trajectories`] trains R short runs from the same base model, each on
its own random mixture of the training groups, and scores every sample of a pool at C checkpoints of every run; the
paper's LEGO study uses R = 10 runs and C = 120 checkpoints. Row i of the result, the `R * C` per-sample losses,
is sample i's feature vector; [`cluster_skills`] clusters these vectors with k-means. The paper reaches 61.0 ± 1.6 %
on LEGO k = 5 this way, against at most 38.4 % for embeddings (its Table 3). [`embed_samples`] gives those embedding
baselines: the mean and the last-token hidden state of a model. [`recovery_accuracy`] is the paper's measure, the
share of samples whose cluster is matched to their skill under the best one-to-one matching.

Mixtures. Run r draws its weights over the training groups from a symmetric Dirichlet(alpha) distribution, seeded by
(seed, r). With alpha = 1 (the default) this is the uniform distribution on the simplex. The paper does not say which
distribution it samples from. The groups may be the true skills (the paper's protocol), any coarse partition the
user has (data sources, files), or a single group when nothing is known. With a single group every mixture is [1],
and the runs differ only in their data order: run r shuffles with `data_seed + r`.

Every run trains through [`SkillItTrainer`] with `mixing="fixed"`, as in graph learning, so loss masks, the collator
and peft behave as in real training. Per-sample losses are scored in batches by `hf_skillit.scoring`, like every
other loss of the package (token-weighted over the positions with labels != -100). Each finished run is written at
once, atomically, to `output_dir/runs/run-<r>.npz`: a killed call retrains only the run it was in, and runs may be
added later (a mixture depends only on (seed, r)).

[`discover_skills`] is the pipeline behind `hf-skillit discover-skills`. It labels a recipe's training and validation
rows with the discovered skills and writes them as `train.jsonl` and `validation.jsonl`, with a `skill` column and
the recipe's own label kept in `true_skill`. It also writes a `recipe.yaml` that trains on them, so `learn-graph` and
`train` follow unchanged, a `report.json` and a PCA plot (docs/discovery.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import yaml
from accelerate import PartialState
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics.cluster import contingency_matrix
from sklearn.preprocessing import StandardScaler
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments, set_seed

from .collator import IGNORE_INDEX
from .graph_learning import fixed_mixture_run_args
from .rundir import atomic_write, load_run_record, settings_hash, write_settings
from .scoring import batches, eval_mode, score_rows
from .skills import SkillSet
from .trainer import SkillItTrainer

__all__ = ["cluster_skills", "discover_skills", "draw_mixtures", "embed_samples", "loss_trajectories"]
__all__ += ["per_sample_loss", "prepare_discovery", "recovery_accuracy", "run_discovery", "standardize"]

logger = logging.getLogger(__name__)

CONFIG_NAME, RUNS_DIR, WORK_DIR = "trajectories.json", "runs", "work"
POOL = "pool"  # the pool's name inside the SkillSet that tokenizes it with the groups
POOLINGS, FORMATS = ("mean", "last"), ("jsonl", "parquet")
OUTPUT_FILES = ("train.{fmt}", "validation.{fmt}", "recipe.yaml", "report.json", "clusters.png")

# Training settings that change what a run measures: a resumed run set must agree on them.
_IDENTITY_TRAINING_FIELDS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                             "weight_decay", "lr_scheduler_type", "warmup_steps", "optim", "seed", "bf16", "fp16")  # fmt: skip


# ----- features -----------------------------------------------------------------------------------------------------


def draw_mixtures(num_groups: int, runs: int, alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """The `[runs, num_groups]` mixtures of the runs: row r ~ Dirichlet(alpha, ..., alpha), seeded by (seed, r)."""
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if num_groups == 1:  # numpy's draw can come out a rounding error off 1
        return np.ones((runs, 1))
    return np.array([np.random.default_rng([seed, r]).dirichlet(np.full(num_groups, alpha)) for r in range(runs)])


def per_sample_loss(
    model: torch.nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int = 64,
    device: torch.device | str | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> np.ndarray:
    """Each row's mean next-token loss over its scored positions (labels != -100); NaN for a row with none."""
    return score_rows(model, dataset, collator, batch_size, device, autocast).mean_loss


def embed_samples(
    model: torch.nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    pooling: str = "mean",
    batch_size: int = 64,
    layer: int = -1,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """`[n_samples, hidden]` embeddings, the paper's baselines (Table 3): the hidden states of `layer` averaged over a
    row's tokens (`pooling="mean"`) or taken at its last token (`"last"`), padding excluded."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    device = device or next(model.parameters()).device
    out = []
    with eval_mode(model):
        for batch in batches(dataset, collator, batch_size, ("input_ids", "attention_mask")):
            mask = batch["attention_mask"].to(device)
            hidden = model(
                input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True
            ).hidden_states[layer]
            if pooling == "mean":
                vectors = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            else:  # the last position whose mask is 1, whichever side the padding is on
                last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
                vectors = hidden[torch.arange(hidden.shape[0], device=device), last]
            out.append(vectors.float().cpu().numpy())
    return np.concatenate(out)


class _PoolScorer(TrainerCallback):
    """Scores every pool sample every `every` optimizer steps of a run."""

    def __init__(self, trainer: SkillItTrainer, pool: datasets.Dataset, every: int):
        self.trainer, self.pool, self.every = trainer, pool, every
        self.losses: list[np.ndarray] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            trainer = self.trainer
            batch_size, autocast = args.per_device_eval_batch_size, trainer.autocast_smart_context_manager
            scores = per_sample_loss(
                trainer.model, self.pool, trainer.data_collator, batch_size, args.device, autocast
            )
            self.losses.append(scores)


def _tokenize_and_check(
    groups: SkillSet, pool: datasets.Dataset, processing_class: Any, args: Any
) -> tuple[SkillSet, datasets.Dataset]:
    """The groups' training data and the pool, tokenized; refuses a pool with samples that have no scored token."""
    if not isinstance(pool, datasets.Dataset) or len(pool) == 0:
        raise ValueError(f"pool must be a non-empty datasets.Dataset, got {pool!r}")
    train = {g: groups.train(g) for g in groups.train_skills}
    tokenized = SkillSet(train, {POOL: pool}).tokenized(processing_class, args.dataset_text_field, args.max_length)
    pool = tokenized.validation(POOL)
    if "labels" in pool.column_names:  # position 0 is never a next-token target
        scored = np.array([sum(label != IGNORE_INDEX for label in row[1:]) for row in pool["labels"]])
    else:
        masks = pool["attention_mask"] if "attention_mask" in pool.column_names else pool["input_ids"]
        scored = np.array([len(row) - 1 for row in masks])
    if (empty := np.flatnonzero(scored <= 0)).size:
        what = "no pool sample has" if empty.size == len(pool) else f"{empty.size} pool samples have"
        raise ValueError(
            f"{what} a scored token (a label != -100 after the first position), so they have no loss to cluster: "
            f"rows {empty[:10].tolist()}{' ...' if empty.size > 10 else ''}. Drop them or fix their labels."
        )
    return SkillSet({g: tokenized.train(g) for g in groups.train_skills}, {}), pool


def loss_trajectories(
    *,
    groups: SkillSet,
    pool: datasets.Dataset,
    model_init: Callable[[], PreTrainedModel],
    output_dir: str | os.PathLike,
    steps: int,
    runs: int = 10,
    eval_every: int | None = None,
    alpha: float = 1.0,
    seed: int = 0,
    args: TrainingArguments | Mapping[str, Any] | None = None,
    processing_class: Any = None,
    data_collator: Callable | None = None,
) -> np.ndarray:
    """Per-sample losses of `pool` along R short training runs with random mixtures (Skill-It Appendix D.2).

    Args:
        groups (`SkillSet`): the training data of each group. Every run trains on a random mixture of the groups. Its
            validation data is not used.
        pool (`datasets.Dataset`): the samples to score, tokenized (`input_ids`, optional `labels` with -100 on
            positions not scored) or raw text in `args.dataset_text_field`.
        model_init (`Callable`): returns the base model, identical at every call (called after `set_seed(args.seed)`).
        output_dir (`str`): where each finished run goes (`runs/run-<r>.npz`). Runs already there are not trained
            again; they must come from the same settings and pool.
        steps (`int`): optimizer steps of each run.
        runs (`int`, *optional*, defaults to 10): R, the number of runs (paper: 10).
        eval_every (`int`, *optional*, defaults to `steps`): steps between two checkpoints; must divide `steps`.
        alpha (`float`, *optional*, defaults to 1.0): the Dirichlet concentration of the mixtures ([`draw_mixtures`]).
        seed (`int`, *optional*, defaults to 0): seed of the mixtures.
        args (`TrainingArguments` or mapping, *optional*): the training settings, as for `learn_graph`. Run r shuffles
            its data with `data_seed + r` (`seed + r` without a data_seed).
        processing_class, data_collator: as for [`SkillItTrainer`].

    Returns:
        `np.ndarray` of shape `[len(pool), runs * C]`, C = steps / eval_every: column `r * C + c` is the loss after
        `(c + 1) * eval_every` steps of run r. The base model's losses are the same in every run and left out.
    """
    if not callable(model_init):
        raise ValueError(f"model_init must be a callable returning a fresh model, got {type(model_init).__name__}")
    for name, value in (("steps", steps), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    eval_every = steps if eval_every is None else eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1 or steps % eval_every:
        raise ValueError(f"eval_every must be a positive divisor of steps={steps}, got {eval_every!r}")
    if PartialState().num_processes > 1:
        raise ValueError("loss_trajectories trains its runs in one process; launch it without torchrun/accelerate")
    if not isinstance(groups, SkillSet):
        raise ValueError(f"groups must be a SkillSet (its training skills are the groups), got {type(groups)}")
    mixtures = draw_mixtures(len(groups.train_skills), runs, alpha, seed)
    output_dir = Path(output_dir)
    base = _as_mapping(args)
    template = fixed_mixture_run_args(base, output_dir / WORK_DIR, steps, steps, {groups.train_skills[0]: 1.0})
    groups, pool = _tokenize_and_check(groups, pool, processing_class, template)
    training = {name: str(getattr(template, name)) for name in (*_IDENTITY_TRAINING_FIELDS, "data_seed")}
    identity = {"groups": list(groups.train_skills), "steps": steps, "eval_every": eval_every, "alpha": alpha}
    identity.update(seed=seed, pool=_fingerprint(pool), training=training)
    identity_hash = settings_hash(identity)
    settings = {"identity": identity, "identity_hash": identity_hash}
    write_settings(output_dir / CONFIG_NAME, settings, "loss trajectories of other settings")

    data_seed = template.data_seed if template.data_seed is not None else template.seed
    for r in range(runs):
        path = output_dir / RUNS_DIR / f"run-{r}.npz"
        if path.is_file():
            continue
        weights = dict(zip(groups.train_skills, mixtures[r].tolist(), strict=True))
        logger.info(
            "loss trajectory run %d/%d: mixture %s", r + 1, runs, " ".join(f"{k}={v:.3f}" for k, v in weights.items())
        )
        run_args = fixed_mixture_run_args(
            {**base, "data_seed": data_seed + r}, output_dir / WORK_DIR / f"run-{r}", steps, steps, weights
        )
        set_seed(run_args.seed)
        kwargs = {"processing_class": processing_class, "data_collator": data_collator}
        trainer = SkillItTrainer(model=model_init(), args=run_args, skills=groups, **kwargs)
        scorer = _PoolScorer(trainer, pool, eval_every)
        trainer.add_callback(scorer)
        start = time.perf_counter()
        trainer.train()
        record = {"losses": np.stack(scorer.losses, axis=1), "seconds": time.perf_counter() - start}
        del trainer, scorer  # they hold each other: free the model before the next run builds one
        gc.collect()
        _atomic_savez(path, **record, mixture=mixtures[r], identity_hash=identity_hash)
        shutil.rmtree(output_dir / WORK_DIR / f"run-{r}", ignore_errors=True)
    with contextlib.suppress(OSError):
        (output_dir / WORK_DIR).rmdir()
    paths = [output_dir / RUNS_DIR / f"run-{r}.npz" for r in range(runs)]
    return np.concatenate([load_run_record(path, identity_hash)["losses"] for path in paths], axis=1)


# ----- clustering and scoring ---------------------------------------------------------------------------------------


def _check_features(features: Any) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must be a non-empty 2-D array [n_samples, n_features], got shape {x.shape}")
    if (bad := np.flatnonzero(~np.isfinite(x).all(axis=1))).size:
        raise ValueError(
            f"features of {bad.size} samples hold NaN or infinite values (rows {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''}): a sample with no scored token, or a run that diverged"
        )
    return x


def _check_num_skills(num_skills: Any, num_samples: int) -> None:
    if isinstance(num_skills, bool) or not isinstance(num_skills, (int, np.integer)) or num_skills < 2:
        raise ValueError(f"num_skills must be an integer >= 2, got {num_skills!r}")
    if num_skills > num_samples:
        raise ValueError(f"num_skills={num_skills} is more than the {num_samples} samples to cluster")


def standardize(features: Any) -> np.ndarray:
    """Each feature (column) centred to mean 0 and scaled to variance 1 over the samples (scikit-learn's
    `StandardScaler`); a constant column becomes 0. Every checkpoint of every run then weighs the same in k-means,
    whatever its loss scale."""
    return StandardScaler().fit_transform(_check_features(features))


def cluster_skills(features: Any, num_skills: int, seed: int = 0, standardized: bool = True) -> np.ndarray:
    """k-means (scikit-learn's `KMeans`, k-means++ initialisation, one run per seed) of the samples' features.

    Args:
        features (`array-like` of shape `[n_samples, n_features]`): e.g. [`loss_trajectories`] or [`embed_samples`].
        num_skills (`int`): k, the number of clusters; 2 <= k <= n_samples.
        seed (`int`, *optional*, defaults to 0): the k-means initialisation (the paper reports 10 of them).
        standardized (`bool`, *optional*, defaults to True): [`standardize`] the features first.

    Returns:
        `np.ndarray` of n_samples integer labels in 0..k-1, numbered in order of first appearance.
    """
    x = _check_features(features)
    _check_num_skills(num_skills, len(x))
    if standardized:
        x = standardize(x)
    labels = KMeans(n_clusters=int(num_skills), n_init=1, random_state=seed).fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    return np.argsort(labels[np.sort(first)])[labels]


def recovery_accuracy(true_labels: Sequence[Any], labels: Sequence[Any]) -> float:
    """Share of samples whose cluster is matched to their skill under the best one-to-one matching of clusters to
    skills (Hungarian matching, scipy's `linear_sum_assignment`), as in the paper's Table 3. Clusters left
    unmatched (more clusters than skills) count as wrong."""
    true_labels, labels = np.asarray(true_labels), np.asarray(labels)
    if true_labels.ndim != 1 or true_labels.shape != labels.shape or len(labels) == 0:
        raise ValueError(
            f"true_labels and labels must be two non-empty 1-D sequences of the same length, got shapes "
            f"{true_labels.shape} and {labels.shape}"
        )
    table = contingency_matrix(true_labels, labels)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


# ----- the recipe pipeline (hf-skillit discover-skills) -------------------------------------------------------------


@dataclasses.dataclass
class _Discovery:
    """A checked discovery job: the recipe's data as a pool, the groups of the runs, and the settings."""

    recipe: Any
    num_skills: int
    output_dir: Path
    fmt: str
    pool: datasets.Dataset
    splits: list[str]
    true_labels: list[str] | None
    groups: SkillSet
    trajectory_kwargs: dict[str, Any]


def prepare_discovery(
    recipe: Any,
    num_skills: int,
    output_dir: str | os.PathLike,
    *,
    runs: int = 10,
    steps: int | None = None,
    eval_every: int | None = None,
    alpha: float = 1.0,
    seed: int = 0,
    use_labels: bool = True,
    fmt: str = "jsonl",
    overwrite: bool = False,
) -> _Discovery:
    """Load and check everything [`run_discovery`] needs, before any training (see [`discover_skills`])."""
    from .recipes import RecipeError, graph_learning_kwargs

    if fmt not in FORMATS:
        raise RecipeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output_dir = Path(output_dir)
    outputs = [output_dir / name.format(fmt=fmt) for name in OUTPUT_FILES]
    inputs = {os.path.realpath(p) for p in _data_files(recipe.data)}
    if clash := [str(p) for p in outputs if os.path.realpath(p) in inputs]:
        raise RecipeError(f"discovery would overwrite the recipe's own data file(s) {clash}: choose another output")
    if not overwrite and (existing := [str(p) for p in outputs if p.exists()]):
        raise RecipeError(f"{output_dir} already holds discovery output {existing}; choose another output directory")
    kwargs = graph_learning_kwargs(recipe)  # loads the data and the tokenizer; the model comes with model_init
    skills: SkillSet = kwargs["skills"]
    parts, splits, names = [], [], []
    for split, source in (("train", skills.train), ("validation", skills.validation)):
        for name in skills.train_skills if split == "train" else skills.eval_skills:
            data = source(name)
            if not isinstance(data, datasets.Dataset):
                raise RecipeError(f"skill {name!r}: discovery needs its {split} rows as a Dataset, not a stream")
            parts.append(data)
            splits += [split] * len(data)
            names += [name] * len(data)
    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts)]
    pool = datasets.concatenate_datasets([p.select_columns(shared) for p in parts])
    _check_num_skills(num_skills, len(pool))
    steps = steps or kwargs["steps"]
    eval_every = eval_every or (kwargs["eval_every"] if steps % kwargs["eval_every"] == 0 else steps)
    if not use_labels:
        train = [skills.train(s) for s in skills.train_skills]
        columns = [c for c in train[0].column_names if all(c in t.column_names for t in train)]
        skills = SkillSet({"all": datasets.concatenate_datasets([t.select_columns(columns) for t in train])}, {})
    trajectory_kwargs = dict(steps=steps, runs=runs, eval_every=eval_every, alpha=alpha, seed=seed)
    trajectory_kwargs.update({k: kwargs[k] for k in ("model_init", "args", "processing_class")})
    trajectory_kwargs["output_dir"] = output_dir / "trajectories"
    template = fixed_mixture_run_args(
        _as_mapping(kwargs["args"]), output_dir, steps, steps, {skills.train_skills[0]: 1.0}
    )
    groups, pool = _tokenize_and_check(skills, pool, kwargs["processing_class"], template)
    true_labels = names if len(set(names)) > 1 else None  # one recipe skill is no labelling to score against
    return _Discovery(recipe, num_skills, output_dir, fmt, pool, splits, true_labels, groups, trajectory_kwargs)


def run_discovery(job: _Discovery) -> dict[str, Any]:
    """Train the runs, cluster, and write the labelled data, the derived recipe, the report and the plot."""
    start = time.process_time()
    features = loss_trajectories(groups=job.groups, pool=job.pool, **job.trajectory_kwargs)
    labels = cluster_skills(features, job.num_skills, seed=job.trajectory_kwargs["seed"])
    # Name clusters by mean loss, lowest first: c0 is the skill the runs learned best.
    means = [features[labels == c].mean() for c in range(job.num_skills)]
    names = np.array([f"c{rank}" for rank in np.argsort(np.argsort(means))])[labels]
    out, tokenizer = job.output_dir, job.trajectory_kwargs["processing_class"]
    out.mkdir(parents=True, exist_ok=True)
    table = job.pool.remove_columns([c for c in job.pool.column_names if c == "skill"])
    table = table.add_column("skill", names.tolist())
    if job.true_labels is not None:
        table = table.add_column("true_skill", job.true_labels)
    if "text" not in table.column_names and tokenizer is not None:  # readable rows for tokenized data
        table = table.add_column("text", tokenizer.batch_decode(table["input_ids"][:], skip_special_tokens=True))
    splits = np.array(job.splits)
    files = {}
    for split in ("train", "validation"):
        files[split] = out / f"{split}.{job.fmt}"
        part = table.select(np.flatnonzero(splits == split))
        part.to_json(files[split], lines=True) if job.fmt == "jsonl" else part.to_parquet(files[split])
    cluster_names = sorted(set(names.tolist()), key=lambda n: int(n[1:]))
    sizes = {c: {s: int(((names == c) & (splits == s)).sum()) for s in ("train", "validation")} for c in cluster_names}
    no_validation = [c for c in cluster_names if sizes[c]["validation"] == 0]
    if no_validation:
        logger.warning("clusters %s have no validation rows: the recipe holds some out of train", no_validation)
    recipe_path = _write_recipe(job, files, no_validation)
    settings = {k: job.trajectory_kwargs[k] for k in ("runs", "steps", "eval_every", "alpha", "seed")}
    mixtures = draw_mixtures(len(job.groups.train_skills), settings["runs"], settings["alpha"], settings["seed"])
    report: dict[str, Any] = {
        "num_skills": job.num_skills,
        "pool": {s: int((splits == s).sum()) for s in ("train", "validation")},
        "cluster_sizes": sizes,
        "accuracy": None if job.true_labels is None else recovery_accuracy(job.true_labels, names),
        "groups": list(job.groups.train_skills),
        **settings,
        "features": list(features.shape),
        "mixtures": mixtures.round(4).tolist(),
        "cpu_seconds": round(time.process_time() - start, 1),
        "files": {**{k: str(v) for k, v in files.items()}, "recipe": str(recipe_path)},
    }
    if job.true_labels is not None:  # rows: the recipe's skills, columns: the clusters, both in np.unique order
        classes, clusters = np.unique(job.true_labels).tolist(), np.unique(names).tolist()  # contingency's order
        table = contingency_matrix(job.true_labels, names).tolist()
        report["contingency"] = {
            t: dict(zip(clusters, row, strict=True)) for t, row in zip(classes, table, strict=True)
        }
    _plot_clusters(features, names, job.true_labels, out / "clusters.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def discover_skills(recipe: Any, num_skills: int, output_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Discover `num_skills` skills in a recipe's data and write it labelled (`hf-skillit discover-skills`).

    The pool is the recipe's training rows followed by its validation rows. The runs are the recipe's `learn_graph`
    runs (its `steps`, `eval_every` and training settings) on random mixtures of the recipe's skills (`use_labels`,
    the paper's protocol) or on all its training rows as one group. Writes `train.jsonl`, `validation.jsonl` (a
    `skill` and a `true_skill` column), `recipe.yaml` (training on them), `report.json`, `clusters.png` and the runs
    (`trajectories/`) into `output_dir` (docs/discovery.md). Keyword arguments: those of [`prepare_discovery`].
    """
    return run_discovery(prepare_discovery(recipe, num_skills, output_dir, **kwargs))


# ----- helpers ------------------------------------------------------------------------------------------------------


def _as_mapping(args: TrainingArguments | Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(args, TrainingArguments):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    return dict(args or {})


def _fingerprint(pool: datasets.Dataset) -> str:
    digest = hashlib.sha256()
    for column in ("input_ids", "labels", "attention_mask"):
        if column in pool.column_names:
            digest.update(json.dumps(pool[column][:]).encode())
    return digest.hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, np.savez would append ".npz" to its name
            np.savez(f, **arrays)

    atomic_write(path, write)


def _data_files(data: Any) -> list[str]:
    paths: list[str] = []
    for name in ("train_file", "validation_file"):
        value = getattr(data, name, None)
        paths += [value] if isinstance(value, str) else list(value or [])
    for name in ("train_files", "validation_files"):
        for value in (getattr(data, name, None) or {}).values():
            paths += [value] if isinstance(value, str) else list(value)
    return [match for path in paths for match in (glob.glob(path) if glob.has_magic(path) else [path])]


def _write_recipe(job: _Discovery, files: Mapping[str, Path], no_validation: list[str]) -> Path:
    """The recipe retargeted to the labelled files: same model and training, the discovered skills as its data."""
    raw = json.loads(json.dumps(job.recipe.raw, default=str))
    data = {k: v for k, v in (raw.get("data") or {}).items() if k in ("validation_per_skill", "seed", "download")}
    data.update({"train_file": str(files["train"]), "skill_column": "skill"})
    if not no_validation:  # else the recipe holds validation rows out of each cluster's training rows
        data["validation_file"] = str(files["validation"])
    raw["data"] = data
    model = raw.setdefault("model", {})
    if job.recipe.model.tiny is not None and job.recipe.model.tokenizer is None:
        # The built-in tokenizer is not found by name: save it beside the data.
        job.trajectory_kwargs["processing_class"].save_pretrained(job.output_dir / "tokenizer")
        model["tokenizer"] = str(job.output_dir / "tokenizer")
    raw["graph"] = {"path": str(job.output_dir / "graph" / "graph.json")}
    raw.setdefault("training", {})["output_dir"] = str(job.output_dir / "run")
    raw["training"].pop("target_skills", None)  # the recipe's skill names do not name discovered skills
    learn = raw.get("learn_graph") or {}
    learn.pop("eval_skills", None)
    raw["learn_graph"] = {**learn, "output_dir": str(job.output_dir / "graph")}
    path = job.output_dir / "recipe.yaml"
    header = (
        f"# Discovered by `hf-skillit discover-skills {job.recipe.source or 'RECIPE'} --num-skills {job.num_skills}`"
        f"\n# from the data of that recipe: learn its graph, then train:\n"
        f"#   hf-skillit learn-graph {path}\n#   hf-skillit train {path}\n"
        f"# Stratified on the recipe's own labels: --set data.skill_column=true_skill training.mixing=stratified\n"
    )
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return path


def _plot_clusters(features: np.ndarray, names: np.ndarray, true_labels: list[str] | None, path: Path) -> None:
    from matplotlib.figure import Figure

    points = PCA(n_components=2, random_state=0).fit_transform(standardize(features))
    panels = [("discovered skill", names)] + ([("recipe's skill", np.array(true_labels))] if true_labels else [])
    figure = Figure(figsize=(5.5 * len(panels), 4.5))
    for k, (title, colours) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        for value in sorted(set(colours.tolist())):
            keep = colours == value
            axes.scatter(points[keep, 0], points[keep, 1], s=8, alpha=0.6, label=f"{value} ({keep.sum()})")
        axes.set(title=f"Loss trajectories, PCA, by {title}", xlabel="PC 1", ylabel="PC 2")
        axes.legend(fontsize=8, markerscale=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
