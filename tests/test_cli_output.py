"""What `hf-skillit train` prints: the training bar and the results, without data-preparation and shard-writing
progress bars unless `--verbose`; no pin_memory warning on CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import datasets
import pytest
import torch
from transformers.utils import logging as transformers_logging

from hf_skillit.cli import _progress_bars, main

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    "training.max_steps=6",
    "training.rounds=2",
    "training.save_steps=3",
    "training.logging_steps=3",
    "data.num_train_samples=200",
    "data.validation_per_skill=10",
    "model.tiny.hidden_size=32",
]


@pytest.fixture
def bars_on():
    """Progress bars switched on (the test suite's conftest turns datasets' off), then put back as they were."""
    threads = torch.get_num_threads()
    was_on = datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    datasets.enable_progress_bars()
    transformers_logging.enable_progress_bar()
    yield
    (datasets.enable_progress_bars if was_on[0] else datasets.disable_progress_bars)()
    (transformers_logging.enable_progress_bar if was_on[1] else transformers_logging.disable_progress_bar)()
    torch.set_num_threads(threads)


def test_progress_bar_switches_are_restored(bars_on):
    with _progress_bars(verbose=False):
        assert not datasets.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
    assert datasets.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    with _progress_bars(verbose=True):
        assert datasets.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()


@pytest.mark.slow
def test_train_is_quiet_unless_verbose(tmp_path, capsys, monkeypatch, bars_on):
    monkeypatch.chdir(ROOT)  # the recipe's graph path is relative to the repository
    outputs = {}
    for flags in ([], ["--verbose"]):
        run_dir = tmp_path / ("verbose" if flags else "quiet")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert (
                main(
                    ["train", "recipes/lego_pretrain.yaml", *flags, "--set", *SHORT, f"training.output_dir={run_dir}"]
                )
                == 0
            )
        outputs[bool(flags)] = capsys.readouterr()
        assert not [w for w in caught if "pin_memory" in str(w.message)]
    quiet, verbose = outputs[False], outputs[True]
    # (No "Filter" bar since issue 24: the synthetic rows are deduplicated as lists, before any Dataset.)
    for bar in ("Map", "Writing model shards"):
        assert bar not in quiet.err
        assert bar in verbose.err
    for out in (quiet, verbose):
        assert "6/6" in out.err  # the training bar stays
        assert "Final validation per skill" in out.out
