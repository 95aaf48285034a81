"""A recipe's `training:` section is read by `HfArgumentParser`, as the same settings given as flags would be."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import HfArgumentParser

from hf_skillit import SkillItConfig
from hf_skillit.recipes import RecipeError
from hf_skillit.recipes.schema import check_mapping, dataclass_schema, parse_arguments_section

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def training_section(path: Path) -> dict:
    training = dict(yaml.safe_load(path.read_text())["training"])
    training.pop("trainer", None)
    if training.get("bf16") == "auto" or (training.get("bf16") and not torch.cuda.is_available()):
        training["bf16"] = False
    return training


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_training_sections_parse_as_their_flags_would(path):
    section = training_section(path)
    parsed = SkillItConfig(**parse_arguments_section(SkillItConfig, section, "training"))
    # The same values, written as the command line of an HfArgumentParser script.
    flags = []
    for key, value in section.items():
        if isinstance(value, list) and key == "target_skills":
            flags += [f"--{key}", *map(str, value)]
        elif isinstance(value, (list, dict)) or value is None:
            continue  # Python values, not flags (report_to: [..], fixed_weights: {..}); compared below
        else:
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    (from_flags,) = HfArgumentParser(SkillItConfig).parse_args_into_dataclasses(flags)
    ours, theirs = parsed.to_dict(), from_flags.to_dict()
    differ = {k for k in ours if ours[k] != theirs[k] and not isinstance(section.get(k), (list, dict, type(None)))}
    assert not differ, {k: (ours[k], theirs[k]) for k in differ}
    # And as the former type checker read them (its schema is still the one the other sections use).
    checked = SkillItConfig(**check_mapping(section, dataclass_schema(SkillItConfig), "training"))
    assert parsed.to_dict() == checked.to_dict()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"learning_rat": 0.1}, "unknown key 'learning_rat' in training; did you mean 'learning_rate'"),
        ({"max_steps": "many"}, "training.max_steps must be int, got 'many' (str)"),
        ({"max_steps": 1.5}, "training.max_steps must be int, got 1.5 (float)"),
        ({"max_steps": [6, 12]}, "training.max_steps must be int, got [6, 12] (list)"),
        ({"eta": True}, "training.eta must be float, got True (bool)"),
        ({"mixing": "skill_itt"}, "training.mixing: 'skill_itt' is not a choice; did you mean 'skill_it'?"),
        ({"bf16": "maybe"}, "training.bf16 must be bool, got 'maybe' (str)"),
    ],
)
def test_bad_values_name_the_key(section, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        parse_arguments_section(SkillItConfig, {"output_dir": "x", "max_steps": 6, **section}, "training")


def test_values_read_as_flags_would_be(tmp_path):
    kwargs = parse_arguments_section(
        SkillItConfig,
        {
            "output_dir": str(tmp_path),
            "max_steps": "6",  # a flag's string, as --max_steps 6
            "rounds": 3,
            "eta": 2,  # an int for a float
            "bf16": "false",
            "target_skills": [3, "b"],  # YAML ints as skill names
            "report_to": ["tensorboard"],  # a Python list, passed as such
            "fixed_weights": {"a": 1, "b": 3},
            "mixing": "fixed",
            "eval_samples_per_skill": None,
        },
        "training",
    )
    assert kwargs["max_steps"] == 6 and kwargs["eta"] == 2.0 and kwargs["bf16"] is False
    assert kwargs["target_skills"] == ["3", "b"] and kwargs["report_to"] == ["tensorboard"]
    config = SkillItConfig(**kwargs, use_cpu=True)
    assert config.fixed_schedule() == ({"a": 1, "b": 3}, None) and config.steps_per_round == 2


def test_yaml_booleans_in_choice_fields_mean_the_word(tmp_path):
    # `save_strategy: no` (or `--set training.save_strategy=no`) is read by YAML as False; transformers' own
    # command line takes `--save_strategy no`, so a choice field takes the word the boolean was written as.
    from hf_skillit.recipes import load_recipe

    recipe = load_recipe(
        "recipes/lego_pretrain.yaml",
        ["training.save_strategy=no", "training.eval_strategy=no", f"training.output_dir={tmp_path}"],
    )
    assert recipe.training.save_strategy == "no" and recipe.training.eval_strategy == "no"
    kwargs = parse_arguments_section(SkillItConfig, yaml.safe_load("save_strategy: no\nmax_steps: 6"), "training")
    assert kwargs["save_strategy"] == "no"
    # A boolean where no choice is a yes/no word: the message says to quote it, in the recipe and in --set.
    with pytest.raises(RecipeError) as error:
        parse_arguments_section(SkillItConfig, {"max_steps": 6, "mixing": False}, "training")
    assert str(error.value).startswith("training.mixing: False is not a choice; choices: skill_it, ")
    assert str(error.value).endswith(
        """quote the word you mean (mixing: "no" in the recipe, --set 'training.mixing="no"')"""
    )
    # Booleans stay booleans where the field is one.
    assert parse_arguments_section(SkillItConfig, {"max_steps": 6, "bf16": False}, "training")["bf16"] is False


def test_null_removes_a_nested_key_and_clears_a_section_key(tmp_path):
    # docs/recipes.md: `null` removes a setting. Inside a section's mapping the key goes, so the default applies
    # (the tiny model's max_position_embeddings fits the data); a section's own key is set to null.
    from hf_skillit.recipes import load_recipe

    base = ["training.output_dir=" + str(tmp_path)]
    recipe = load_recipe("recipes/lego_pretrain.yaml", [*base, "model.tiny.max_position_embeddings=64"])
    assert recipe.model.tiny["max_position_embeddings"] == 64
    # Given, then removed again (a later --set wins): the recipe is as if it had never been set.
    overrides = [*base, "model.tiny.max_position_embeddings=64", "model.tiny.max_position_embeddings=null"]
    recipe = load_recipe("recipes/lego_pretrain.yaml", overrides)
    assert "max_position_embeddings" not in recipe.model.tiny and recipe.model.tiny["hidden_size"] == 128
    recipe = load_recipe("recipes/lego_pretrain.yaml", [*base, "model.tiny.nonexistent=null", "graph.path=null"])
    assert "nonexistent" not in recipe.model.tiny and recipe.graph.path is None
    recipe = load_recipe("recipes/lego_pretrain.yaml", [*base, "training.single_thread_max_params=null"])
    assert recipe.training.single_thread_max_params is None
