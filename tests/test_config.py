"""`SkillItConfig`: every rule of `__post_init__`, one test each, with the value at the boundary.

The one rule not exercised here, starting the CPU process group with `ddp_timeout` under torchrun, needs two
processes: tests/reliability/test_ddp_faults.py checks it (a hung rank fails the job within `ddp_timeout`).
"""

import pytest

from hf_skillit import SkillItConfig
from hf_skillit.mixer_registry import mixer_names


def test_defaults_are_the_paper_lego_setting(make_config):
    args = make_config(max_steps=6)
    assert (args.mixing, args.rounds, args.eta, args.window) == ("skill_it", 6, 0.5, 3)
    assert args.steps_per_round == 1
    assert args.overwrite_output_dir is False and args.evaluate_skills_every_round is True


def test_mixing_must_be_registered(make_config):
    for name in mixer_names():
        settings = {"fixed_weights": {"1": 1.0}} if name == "fixed" else {}
        assert make_config(max_steps=6, mixing=name, **settings).mixing == name
    with pytest.raises(ValueError, match="mixing='greedy' is not one of skill_it, static, stratified, random"):
        make_config(max_steps=6, mixing="greedy")


@pytest.mark.parametrize("rounds", [0, -1, 2.0])
def test_rounds_must_be_a_positive_integer(make_config, rounds):
    with pytest.raises(ValueError, match=f"rounds must be a positive integer, got {rounds!r}"):
        make_config(max_steps=6, rounds=rounds)


@pytest.mark.parametrize("max_steps", [-1, 0])
def test_max_steps_is_required(make_config, max_steps):
    with pytest.raises(ValueError, match="SkillItConfig needs max_steps > 0"):
        make_config(max_steps=max_steps)


def test_a_round_needs_a_step(make_config):
    assert make_config(max_steps=3, rounds=3).steps_per_round == 1
    with pytest.raises(ValueError, match="rounds=4 is more than max_steps=3: a round needs a step"):
        make_config(max_steps=3, rounds=4)


def test_max_steps_must_be_a_multiple_of_rounds(make_config):
    assert make_config(max_steps=12, rounds=4).steps_per_round == 3
    # 13 = 3 * 4 + 1: the message offers the multiples on either side, 12 and 16.
    with pytest.raises(ValueError, match="max_steps=13 is not a multiple of rounds=4: .* use max_steps=12 or 16"):
        make_config(max_steps=13, rounds=4)


@pytest.mark.parametrize("eta", [0.0, -0.5, float("inf"), float("nan")])
def test_eta_must_be_finite_and_positive(make_config, eta):
    with pytest.raises(ValueError, match=f"eta must be a finite number > 0, got {eta!r}"):
        make_config(max_steps=6, eta=eta)
    assert make_config(max_steps=6, eta=1e-6).eta == 1e-6


@pytest.mark.parametrize("window", [0, -2, 1.5])
def test_window_must_be_an_integer_of_at_least_one(make_config, window):
    with pytest.raises(ValueError, match=f"window must be an integer >= 1, got {window!r}"):
        make_config(max_steps=6, window=window)
    assert make_config(max_steps=6, window=1).window == 1


def test_eval_samples_per_skill_is_positive_or_none(make_config):
    assert make_config(max_steps=6, eval_samples_per_skill=None).eval_samples_per_skill is None
    assert make_config(max_steps=6, eval_samples_per_skill=1).eval_samples_per_skill == 1
    with pytest.raises(ValueError, match="eval_samples_per_skill must be >= 1 or None, got 0"):
        make_config(max_steps=6, eval_samples_per_skill=0)


def test_fixed_weights_json_string_is_parsed(make_config):
    args = make_config(max_steps=6, mixing="fixed", fixed_weights='{"1": 2, "2": 1}')
    assert args.fixed_weights == {"1": 2, "2": 1}
    assert args.fixed_schedule() == ({"1": 2, "2": 1}, None)
    with pytest.raises(ValueError, match="fixed_weights is not valid JSON"):
        make_config(max_steps=6, fixed_weights="{not json")


@pytest.mark.parametrize(
    ("fixed_weights", "expected"),
    [
        ({"1": 1.0}, ({"1": 1.0}, None)),
        ([1.0, 0.0], ([1.0, 0.0], None)),
        ([{"1": 1.0}, {"2": 1.0}], (None, [{"1": 1.0}, {"2": 1.0}])),
        ({"schedule": [[1.0, 0.0]]}, (None, [[1.0, 0.0]])),
    ],
    ids=["mapping", "list", "schedule", "schedule-key"],
)
def test_fixed_weights_are_weights_or_a_schedule(make_config, fixed_weights, expected):
    assert make_config(max_steps=6, mixing="fixed", fixed_weights=fixed_weights).fixed_schedule() == expected


def test_a_mixer_gets_the_settings_it_requires(make_config):
    with pytest.raises(ValueError, match=r"mixing='fixed' needs fixed_weights \({skill: weight} or a per-round"):
        make_config(max_steps=6, mixing="fixed")


def test_auto_find_batch_size_is_refused(make_config):
    with pytest.raises(ValueError, match="auto_find_batch_size=True is not supported: rounds are sized"):
        make_config(max_steps=6, auto_find_batch_size=True)


def test_persistent_workers_are_refused(make_config):
    with pytest.raises(ValueError, match="dataloader_persistent_workers=True is not supported"):
        make_config(max_steps=6, dataloader_num_workers=1, dataloader_persistent_workers=True)


def test_the_parser_knows_the_registry(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(SkillItConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--max_steps", "4", "--rounds", "2", "--mixing", "skill_curriculum"]
    )
    assert args.mixing == "skill_curriculum" and args.steps_per_round == 2
    with pytest.raises(SystemExit):
        HfArgumentParser(SkillItConfig).parse_args_into_dataclasses(["--output_dir", "x", "--mixing", "greedy"])
