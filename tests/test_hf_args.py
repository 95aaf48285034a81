"""HF-native arguments: `SkillItConfig` from command-line flags with `HfArgumentParser`, and the example script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from hf_skillit import SkillItConfig

EXAMPLES = Path(__file__).parent.parent / "examples"


def parse(*flags: str, tmp_path) -> SkillItConfig:
    (config,) = HfArgumentParser(SkillItConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--max_steps", "12", "--use_cpu", "--report_to", "none", *flags]
    )
    return config


def test_skill_it_flags_parse(tmp_path):
    config = parse("--mixing", "skill_it", "--eta", "0.5", "--rounds", "6", tmp_path=tmp_path)
    assert (config.mixing, config.eta, config.rounds, config.steps_per_round) == ("skill_it", 0.5, 6, 2)
    config = parse(
        "--mixing", "fixed", "--fixed_weights", '{"1": 3, "2": 1}', "--target_skills", "1", "2", tmp_path=tmp_path
    )
    assert config.fixed_weights == {"1": 3, "2": 1}  # a JSON string on the command line
    assert config.target_skills == ["1", "2"]


def test_bad_flags_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse("--mixing", "skill_itt", tmp_path=tmp_path)
    assert "invalid choice: 'skill_itt'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_steps=12 is not a multiple of rounds=5"):
        parse("--rounds", "5", tmp_path=tmp_path)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_example_script_trains_from_flags(tmp_path):
    example = load_example("skillit_lego")
    parser = HfArgumentParser((example.ScriptArguments, SkillItConfig))
    script_args, training_args = parser.parse_args_into_dataclasses(
        [
            *("--output_dir", str(tmp_path), "--mixing", "skill_it", "--eta", "0.5", "--rounds", "3"),
            *("--max_steps", "6", "--per_device_train_batch_size", "8", "--use_cpu", "--report_to", "none"),
            *("--k", "3", "--num_train_samples", "300", "--validation_per_skill", "8", "--hidden_size", "32"),
            *("--num_layers", "1", "--disable_tqdm", "true", "--save_strategy", "no"),
        ]
    )
    trainer = example.main(script_args, training_args)
    trajectory = trainer.trajectory
    assert [r["global_step"] for r in trajectory] == [2, 4, 6]
    # The chain graph: p_1 ∝ exp(eta * row sums) = exp(0.5 * [1.5, 1.5, 1]).
    assert trajectory[0]["p"]["1"] == pytest.approx(trajectory[0]["p"]["2"])
    assert trajectory[0]["p"]["1"] / trajectory[0]["p"]["3"] == pytest.approx(2.718281828 ** (0.5 * 0.5))


def test_example_settings_file_parses(tmp_path):
    example = load_example("skillit_lego")
    parser = HfArgumentParser((example.ScriptArguments, SkillItConfig))
    script_args, training_args = parser.parse_yaml_file(str(EXAMPLES / "skillit_lego.yaml"))
    assert (training_args.mixing, training_args.eta, training_args.rounds, training_args.max_steps) == (
        "skill_it",
        0.5,
        6,
        120,
    )
    assert script_args.k == 5
