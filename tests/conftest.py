"""Shared fixtures: a local word-level tokenizer, tiny models built from config, and small skill sets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hf_skillit import SkillItConfig, SkillSet  # noqa: E402
from hf_skillit.synthetic import build_tokenizer, encode, make_lego, make_tiny_model, tiny_model_config  # noqa: E402

# Tiny models run faster on one thread than on two contending ones, and results do not depend on the CPU count.
torch.set_num_threads(1)
datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def skillit_config(output_dir, **overrides) -> SkillItConfig:
    """A small CPU `SkillItConfig` writing into `output_dir`: batches of 8 (validation: 16), lr 3e-3, seed 0, no
    checkpoints, no logging, no progress bars; `overrides` are any `SkillItConfig` arguments. For scripts that run
    outside pytest; tests use the `make_config` fixture."""
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1000,
        seed=0,
    )
    args.update(overrides)
    return SkillItConfig(**args)


@pytest.fixture
def make_config(tmp_path):
    """`make_config(**overrides)`: `skillit_config` writing into the test's `tmp_path`."""

    def make(**overrides) -> SkillItConfig:
        return skillit_config(tmp_path, **overrides)

    return make


@pytest.fixture
def tiny_model(tokenizer):
    def make(seed: int = 0, **overrides):
        config = dict(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=64)
        config.update(overrides)
        return make_tiny_model(tiny_model_config(tokenizer=tokenizer, **config), seed=seed)

    return make


def lego_skills(tokenizer, sizes: dict[str, int], validation: int = 16, seed: int = 0) -> SkillSet:
    """LEGO (k = 3) skills with the given numbers of training rows, each row carrying a unique `id`."""
    total = sum(sizes.values()) + validation * len(sizes)
    data = encode(make_lego(total * 3 + 300, k=3, seed=seed), tokenizer)
    data = data.add_column("id", list(range(len(data))))
    by_skill = {name: data.filter(lambda s, name=name: s == name, input_columns="skill") for name in sizes}
    train = {name: by_skill[name].select(range(n)) for name, n in sizes.items()}
    held_out = {name: by_skill[name].select(range(sizes[name], sizes[name] + validation)) for name in sizes}
    return SkillSet(train, held_out)


@pytest.fixture
def skills(tokenizer):
    return lego_skills(tokenizer, {"1": 200, "2": 200, "3": 200})
