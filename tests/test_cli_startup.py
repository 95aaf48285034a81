"""`import hf_skillit` and `hf-skillit --help` stay fast: the heavy libraries load only when a command needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_skillit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "peft", "lm_eval", "torch", "datasets", "matplotlib")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _main(argv: list[str]) -> tuple[int, list[str], subprocess.CompletedProcess]:
    """`hf-skillit argv` in a fresh interpreter: its exit code, the heavy libraries it imported, the process."""
    code = (
        "import sys, json; from hf_skillit.cli import main; "
        f"rc = main({argv!r}); print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    done = _run(code)
    rc, loaded = json.loads(done.stdout.splitlines()[-1])
    return rc, loaded, done


def test_import_loads_no_heavy_library():
    done = _run(f"import sys, json, hf_skillit; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_public_names_resolve_to_their_modules():
    assert sorted(hf_skillit.__all__) == sorted(hf_skillit._EXPORTS)
    for name, module in hf_skillit._EXPORTS.items():
        value = getattr(hf_skillit, name)
        assert value is getattr(sys.modules[f"hf_skillit.{module}"], name)
    assert set(hf_skillit.__all__) <= set(dir(hf_skillit))


def test_help_loads_no_heavy_library():
    code = (
        "import sys, json, time; t = time.perf_counter(); from hf_skillit.cli import main; "
        "rc = main(['--help']); "
        f"print(json.dumps([rc, time.perf_counter() - t, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    rc, seconds, loaded = json.loads(done.stdout.splitlines()[-1])
    assert rc == 0 and loaded == []
    # The whole console script answers too. Its time (0.1 s idle; 5 s before the lazy imports) is measured in
    # benchmarks/RESULTS.md, not asserted here: a wall-time bound fails on a loaded machine, not on a regression,
    # and the import check above is what keeps it quick.
    script = Path(sys.executable).with_name("hf-skillit")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.max_stpes=5"], "unknown key 'max_stpes' in training; did you mean 'max_steps'?"),
        (["model.tiy.hidden_size=5"], "unknown key 'tiy' in model; did you mean 'tiny'?"),
        (["data.synthetc=lego"], "unknown key 'synthetc' in data; did you mean 'synthetic'?"),
        (["trainin.max_steps=5"], "unknown key 'trainin' in the recipe; did you mean 'training'?"),
        (["training.max_steps"], "must look like section.key=value"),
        # Since issue 24 the values too (the training section through the stored copy of HfArgumentParser's fields,
        # hf_skillit/recipes/training_fields.json); the message names the key and the fix.
        (["training.mixing=skillit"], "training.mixing: 'skillit' is not a choice; did you mean 'skill_it'?"),
        (["training.max_steps=many"], "training.max_steps must be int, got 'many' (str)"),
        (["training.save_strategy=sometimes"], "training.save_strategy: 'sometimes' is not a choice; choices: no,"),
        # A YAML boolean on a choice field with no such word: the fix is to quote the word.
        (["training.lr_scheduler_type=yes"], 'quote the word you mean (lr_scheduler_type: "yes" in the recipe'),
        (["training.max_steps=1501"], "use max_steps=1500 or 1506"),  # a Skill-It check across fields
        (["training.packing=true"], "packing=True needs max_length"),
        (["data.generator.k=three"], "data.generator.k must be int, got 'three' (str)"),
        (["model.tiny.hidden_size=wide"], "model.tiny.hidden_size must be int, got 'wide' (str)"),
        (["data.num_train_samples=0"], "data.num_train_samples must be >= 1, got 0"),
    ],
)
def test_a_wrong_key_or_value_is_refused_before_torch_is_imported(overrides, message):
    # Checked before the command imports torch, transformers or datasets (seconds on 2 cores: measured in
    # benchmarks/RESULTS.md, issue 24); the message is the one the full check gives.
    rc, loaded, done = _main(["train", "recipes/lego_pretrain.yaml", "--set", *overrides])
    assert (rc, loaded) == (2, [])
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["training.save_strategy=no"],  # YAML reads `no` as False: the choice "no" is meant
        ["model.tiny.max_position_embeddings=null"],  # null removes the key: tiny_model_config's default
        ["training.mixing=random", "graph.path=null"],
    ],
)
def test_dry_run_of_a_synthetic_recipe_imports_no_model_library(overrides):
    rc, loaded, done = _main(
        ["train", "recipes/lego_pretrain.yaml", "--dry-run", *(["--set", *overrides] * bool(overrides))]
    )
    assert (rc, loaded) == (0, []), done.stderr
    assert "Mixture of round 1" in done.stdout and "9998 rows" in done.stdout


def test_dry_run_of_user_files_imports_datasets_but_no_model_library(tmp_path):
    # The user's files are opened with `datasets` (as the run opens them); torch, transformers and peft stay out.
    import yaml

    for skill in ("a", "b"):
        rows = "".join(json.dumps({"text": f"{skill} " * (i % 7 + 1)}) + "\n" for i in range(40))
        (tmp_path / f"{skill}.jsonl").write_text(rows)
    raw = {
        "model": {"name_or_path": "gpt2"},
        "data": {"train_files": {s: str(tmp_path / f"{s}.jsonl") for s in ("a", "b")}, "validation_per_skill": 5},
        "graph": {"matrix": [[1.0, 0.5], [0.0, 1.0]]},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "rounds": 2, "max_length": 8},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    rc, loaded, done = _main(["train", str(tmp_path / "r.yaml"), "--dry-run"])
    assert (rc, loaded) == (0, ["datasets"]), done.stderr
    assert "35 rows" in done.stdout and "5 rows held out" in done.stdout
    assert "Tokens per skill: counted by `--dry-run --measure`" in done.stdout


def test_stored_training_fields_are_the_ones_the_dataclasses_give():
    # training_fields.json is derived, never edited: it must be what HfArgumentParser(SkillItConfig) says now. If
    # this fails after a change to SkillItConfig (or a transformers release that changed its training arguments),
    # rewrite it:
    #     python -m hf_skillit.recipes.training_fields
    # Derived in a fresh interpreter, as the command writes it: the registry's order (the choices of `mixing`)
    # follows the order the mixers' modules were imported in.
    from hf_skillit.recipes.training_fields import PATH, stored_fields

    done = _run(
        "import json; from hf_skillit.recipes.training_fields import derive_fields; print(json.dumps(derive_fields()))"
    )
    assert done.returncode == 0, done.stderr
    stored, derived = json.loads(PATH.read_text()), json.loads(done.stdout.splitlines()[-1])
    # The release number is for the reader; the sources' hash and the fields decide.
    assert (stored["sources"], stored["fields"]) == (derived["sources"], derived["fields"])
    assert stored_fields() is not None  # it describes this install, so the CLI uses it


RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_the_quick_check_reads_each_recipe_as_the_full_check(path, monkeypatch):
    # check_recipe (no torch) and load_recipe (HfArgumentParser, SkillItConfig) give the same sections, and the same
    # training values for every key the recipe sets and every Skill-It setting.
    from hf_skillit.recipes import RecipeError
    from hf_skillit.recipes.loading import check_recipe, load_recipe
    from hf_skillit.recipes.schema import dataclass_field_names

    monkeypatch.chdir(ROOT)
    overrides = ["model.lora=null"]  # peft's keys: left to the full check
    try:
        full = load_recipe(path, overrides, check_graph=False)
    except RecipeError as err:  # e.g. data that a script makes first: the quick check says the same
        with pytest.raises(RecipeError) as quick_err:
            check_recipe(path, overrides)
        assert str(quick_err.value) == str(err)
        return
    quick = check_recipe(path, overrides)
    for section in ("model", "data", "graph", "report"):
        assert getattr(quick, section) == getattr(full, section), section
    # What hf_skillit.settings and the plan read; the other TrainingArguments values are normalised by its
    # __post_init__ (report_to "none" -> []), which the quick check does not run.
    read = ["output_dir", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size"]
    for key in [*read, *dataclass_field_names("hf_skillit.config", "SkillItConfig")]:
        value = getattr(full.training, key)
        assert getattr(quick.training, key) == getattr(value, "value", value), key


def test_early_key_check_reads_the_same_keys_as_the_full_check():
    # The training keys are read from the sources (ast) without importing transformers; they must be exactly the
    # keys HfArgumentParser knows, or a valid key would be refused (or a wrong one let through to the slow check).
    from hf_skillit import SkillItConfig
    from hf_skillit.recipes.loading import _early_keys
    from hf_skillit.recipes.schema import dataclass_schema

    early = _early_keys("training", {})
    assert sorted(k for k in early if k != "trainer") == sorted(dataclass_schema(SkillItConfig))
    assert _early_keys("training", {"trainer": "sft"}) is None  # TRL's keys: left to the full check


def test_recipes_package_names_resolve_to_their_modules():
    import hf_skillit.recipes as recipes

    assert recipes.__all__ == sorted(recipes._EXPORTS)
    for name, module in recipes._EXPORTS.items():
        assert getattr(recipes, name) is getattr(sys.modules[module], name)


@pytest.mark.parametrize("section", ["model", "data", "graph", "training"])
def test_the_quick_check_refuses_a_section_that_is_not_a_mapping(section):
    import yaml

    from hf_skillit.recipes import RecipeError
    from hf_skillit.recipes.loading import check_recipe

    raw = yaml.safe_load((ROOT / "recipes" / "lego_pretrain.yaml").read_text())
    with pytest.raises(RecipeError, match=f"^{section} must be a mapping of key: value, got list$"):
        check_recipe(None, raw={**raw, section: [1]})


def test_stored_training_fields_are_not_used_for_other_transformers_sources(monkeypatch):
    # Another transformers whose training arguments' sources differ: the stored fields may be wrong, so the quick
    # check steps aside (None) and load_recipe parses the section with HfArgumentParser itself.
    from hf_skillit.recipes import training_fields
    from hf_skillit.recipes.loading import check_recipe

    monkeypatch.chdir(ROOT)
    assert training_fields.stored_fields() is not None
    monkeypatch.setattr(training_fields, "sources_fingerprint", lambda: "0" * 64)
    assert training_fields.stored_fields() is None
    assert check_recipe("recipes/lego_pretrain.yaml") is None
