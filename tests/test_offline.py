"""Recipes offline: a hub model that cannot be loaded is one line naming the offline alternatives, after at most one
request; the fine-tuning recipe generates only the rows its training draws."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub import constants

from hf_skillit.cli import main
from hf_skillit.recipes import RecipeError, load_recipe
from hf_skillit.recipes import hub as hub_module
from hf_skillit.recipes.data import _with_train_rows
from hf_skillit.recipes.hub import OFFLINE_ALTERNATIVES, hub_kwargs

ROOT = Path(__file__).resolve().parents[1]
MISSING = "hf-skillit-tests/no-such-model"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty hub cache in tmp_path and a hub that fails every request (counted), online unless told."""
    calls = []

    def unreachable(name, **kwargs):
        calls.append(name)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    hub_module._lookup.cache_clear()
    yield calls
    hub_module._lookup.cache_clear()


def _cache(tmp_path: Path, name: str) -> None:
    """A snapshot of `name` in the hub cache layout: refs/main -> snapshots/<commit>/config.json."""
    repo = tmp_path / "hub" / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")


def test_unreachable_hub_is_one_line_after_one_request(hub):
    with pytest.raises(RecipeError) as caught:
        hub_kwargs(MISSING, None, "model.name_or_path")
    message = str(caught.value)
    assert message.startswith(f"model.name_or_path: cannot load {MISSING!r}: the hub cannot be reached")
    assert message.endswith(OFFLINE_ALTERNATIVES) and "\n" not in message
    with pytest.raises(RecipeError):  # the tokenizer and the model ask for the same id: still one request
        hub_kwargs(MISSING, None, "model.name_or_path")
    assert hub == [MISSING]


def test_offline_mode_sends_no_request(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RecipeError, match=r"not in the local cache and the hub is off \(HF_HUB_OFFLINE=1\)"):
        hub_kwargs(MISSING, None, "model.tokenizer")
    assert hub == []


def test_cached_model_loads_from_the_cache_when_the_hub_is_unreachable(hub, tmp_path, monkeypatch):
    _cache(tmp_path, MISSING)
    assert hub_kwargs(MISSING, None, "model.name_or_path") == {"local_files_only": True}
    assert hub == [MISSING]
    hub_module._lookup.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_kwargs(MISSING, None, "model.name_or_path") == {}  # offline mode reads the cache by itself


def test_local_folder_needs_no_hub(hub, tmp_path):
    assert hub_kwargs(str(tmp_path), None, "model.name_or_path") == {}
    assert hub == []


def test_cli_reports_the_hub_error_on_one_line(hub, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    argv = ["train", "recipes/lego_finetune_lora.yaml", "--set", f"training.output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hf-skillit: error: model.name_or_path: cannot load")
    assert "model.pretrained=smollm2-135m" in err and hub == ["EleutherAI/gpt-neo-125M"]


def test_finetune_recipe_generates_the_rows_training_draws(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = load_recipe("recipes/lego_finetune_lora.yaml", ["training.max_steps=600"])
    assert recipe.data.num_train_samples is None
    assert _with_train_rows(recipe).num_train_samples == 600 * 32
    # A recipe that gives the number keeps it.
    assert _with_train_rows(load_recipe("recipes/lego_pretrain.yaml")).num_train_samples == 30000
    recipe = load_recipe(
        "recipes/lego_finetune_lora.yaml", ["training.max_steps=60", "training.gradient_accumulation_steps=2"]
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # after parsing: the rows are drawn over both processes
    assert _with_train_rows(recipe).num_train_samples == 60 * 32 * 2 * 2


def test_recipes_that_need_the_hub_say_so_first():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        model = yaml.safe_load(path.read_text()).get("model") or {}
        name = model.get("name_or_path") or model.get("tokenizer")
        if name is not None and not name.startswith(("runs/", "./", "/")):
            assert path.read_text().splitlines()[0].startswith("# Needs:"), path.name
