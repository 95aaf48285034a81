"""TRL integration: `SkillItSFTTrainer` (TRL's SFTTrainer with Skill-It rounds) on a tiny model, real steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import StopAt, skillit_config
from datasets import Dataset
from transformers import HfArgumentParser
from trl import SFTConfig, SFTTrainer

from hf_skillit import SkillSet, SkillsGraph
from hf_skillit.integrations.trl import SkillItSFTConfig, SkillItSFTTrainer
from hf_skillit.synthetic import build_tokenizer, make_lego

EXAMPLES = Path(__file__).parent.parent / "examples"
SKILLS = ["1", "2", "3"]
GRAPH = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
# TRL's defaults that a CPU test does not want (bf16 autocast, gradient checkpointing), and quiet, fast runs.
CPU = dict(bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", disable_tqdm=True, seed=0)


@pytest.fixture(scope="module")
def formats():
    """Skill 1 as raw text, skill 2 as prompt/completion, skill 3 as chat messages (LEGO rows of each depth)."""
    lego = make_lego(900, k=3, seed=0)
    by_skill = {s: lego.filter(lambda v, s=s: v == s, input_columns="skill") for s in SKILLS}
    text = by_skill["1"].select_columns(["text"])
    prompt_completion = (
        by_skill["2"].map(lambda r: {"completion": " " + r["answer"]}).select_columns(["prompt", "completion"])
    )
    chat = by_skill["3"].map(
        lambda r: {
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["answer"]}]
        }
    )
    return {"1": text, "2": prompt_completion, "3": chat.select_columns(["messages"])}


@pytest.fixture
def chat_tokenizer():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def sft_config(tmp_path, **overrides) -> SkillItSFTConfig:
    """`skillit_config`'s small run as a `SkillItSFTConfig`: Skill-It (eta 1, window 2), 6 steps in 3 rounds of
    batches of 4, rows up to 64 tokens."""
    settings = dict(mixing="skill_it", eta=1.0, window=2, rounds=3, max_steps=6, per_device_train_batch_size=4)
    return skillit_config(tmp_path, SkillItSFTConfig, **{**settings, "max_length": 64, **CPU, **overrides})


def build(tmp_path, formats, tokenizer, tiny_model, **overrides) -> SkillItSFTTrainer:
    callbacks = overrides.pop("callbacks", None)
    peft_config = overrides.pop("peft_config", None)
    return SkillItSFTTrainer(
        model=tiny_model(),
        args=sft_config(tmp_path, **overrides),
        skills=SkillSet.from_dict(formats, 16),
        graph=SkillsGraph(GRAPH, SKILLS),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_each_skill_is_tokenized_as_sft_trainer_tokenizes_it(tmp_path, formats, chat_tokenizer, tiny_model):
    trainer = build(tmp_path / "skillit", formats, chat_tokenizer, tiny_model)
    split = SkillSet.from_dict(formats, 16)
    for skill in SKILLS:
        alone = SFTTrainer(
            model=tiny_model(),
            args=SFTConfig(output_dir=str(tmp_path / skill), max_length=64, **CPU),
            train_dataset=split.train(skill),
            processing_class=chat_tokenizer,
        ).train_dataset
        ours = trainer.skills.train(skill)
        assert ours["input_ids"][:] == alone["input_ids"][:], skill
        assert ours["labels"][:] == alone["labels"][:], skill
    row = trainer.skills.validation("2")[0]
    # Prompt/completion rows are scored on the completion (with TRL's EOS) only, in training and in validation.
    scored = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert scored == chat_tokenizer(row["completion"])["input_ids"] and len(scored) < len(row["input_ids"])


def test_logged_mixture_is_algorithm_1_of_the_logged_losses(tmp_path, formats, chat_tokenizer, tiny_model):
    trainer = build(tmp_path, formats, chat_tokenizer, tiny_model)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "skillit/p/1" in entry]
    assert [entry["step"] for entry in logged] == [2, 4, 6]
    p = [np.array([entry[f"skillit/p/{s}"] for s in SKILLS]) for entry in logged]
    losses = [np.array([entry[f"skillit/loss/{s}"] for s in SKILLS]) for entry in logged]
    eta, window = 1.0, 2
    assert np.allclose(p[0], softmax(eta * GRAPH.sum(axis=1)), atol=1e-12)
    for t in range(1, 3):
        # p_{t+1} ∝ exp(eta * Σ_{τ = t-w+1..t} A L_τ), the window counted in rounds.
        recent = sum(losses[max(0, t - window) : t])
        assert np.allclose(p[t], softmax(eta * GRAPH @ recent), atol=1e-12), t
    trajectory = trainer.trajectory
    assert [sum(r["samples"].values()) for r in trajectory] == [8, 8, 8]
    assert all(np.isclose(r["p"][s], p[i][j]) for i, r in enumerate(trajectory) for j, s in enumerate(SKILLS))


def test_resume_mid_round_continues_the_identical_run(tmp_path, formats, chat_tokenizer, tiny_model):
    saving = dict(save_strategy="steps", save_steps=3)
    whole = build(tmp_path / "whole", formats, chat_tokenizer, tiny_model, **saving)
    whole.train()
    cut = build(tmp_path / "cut", formats, chat_tokenizer, tiny_model, callbacks=[StopAt(3)], **saving)
    cut.train()
    assert cut.state.global_step == 3  # one step into round 2
    resumed = build(tmp_path / "cut", formats, chat_tokenizer, tiny_model, **saving)
    resumed.train(resume_from_checkpoint=True)
    for a, b in zip(whole.trajectory, resumed.trajectory, strict=True):
        assert a["samples"] == b["samples"] and a["global_step"] == b["global_step"]
        assert np.allclose(list(a["p"].values()), list(b["p"].values()), rtol=0, atol=1e-9)
        assert np.allclose(list(a["eval_loss"].values()), list(b["eval_loss"].values()), rtol=0, atol=1e-6)


def test_lora_through_peft_config_trains_only_the_adapter(tmp_path, formats, chat_tokenizer, tiny_model):
    from peft import LoraConfig, PeftModel

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value", "dense_h_to_4h"], task_type="CAUSAL_LM")
    trainer = build(tmp_path, formats, chat_tokenizer, tiny_model, peft_config=lora, learning_rate=1e-2)
    assert isinstance(trainer.model, PeftModel)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    start = trainer.evaluate_skills()
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n, p in before.items() if not np.allclose(p.numpy(), after[n].detach().numpy())}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    final = trainer.trajectory[-1]["eval_loss"]
    assert all(final[s] < start[s] for s in SKILLS), (start, final)


def test_config_parses_from_flags_and_bad_setups_are_refused(tmp_path, formats, chat_tokenizer, tiny_model):
    (config,) = HfArgumentParser(SkillItSFTConfig).parse_args_into_dataclasses(
        [
            *("--output_dir", str(tmp_path), "--max_steps", "12", "--mixing", "skill_it", "--eta", "0.5"),
            *("--rounds", "6", "--max_length", "128", "--use_cpu", "--bf16", "false", "--report_to", "none"),
        ]
    )
    assert (config.mixing, config.eta, config.rounds, config.steps_per_round, config.max_length) == (
        "skill_it",
        0.5,
        6,
        2,
        128,
    )
    with pytest.raises(ValueError, match="not a multiple of rounds"):
        sft_config(tmp_path, max_steps=7)
    with pytest.raises(ValueError, match="args must be a SkillItSFTConfig"):
        SkillItSFTTrainer(model=tiny_model(), args=SFTConfig(output_dir=str(tmp_path), **CPU), skills=None)


def test_example_script_fine_tunes_a_saved_model_on_a_skills_dir(tmp_path, formats, chat_tokenizer, tiny_model):
    """examples/sft_skillit.py, TRL-style flags: a local model by name, a skills folder, LoRA, streaming skills."""
    import importlib.util
    import sys

    from trl import ModelConfig, TrlParser

    model_dir, skills_dir = tmp_path / "model", tmp_path / "skills"
    tiny_model().save_pretrained(model_dir)
    chat_tokenizer.save_pretrained(model_dir)
    for skill, rows in formats.items():
        rows.select(range(60)).to_json(skills_dir / skill / "part-0.jsonl")
    spec = importlib.util.spec_from_file_location("sft_skillit", EXAMPLES / "sft_skillit.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules["sft_skillit"] = example  # dataclasses look their module up there
    spec.loader.exec_module(example)
    parser = TrlParser((example.SkillArguments, SkillItSFTConfig, ModelConfig))
    flags = [
        *("--model_name_or_path", str(model_dir), "--skills_dir", str(skills_dir), "--streaming"),
        *("--validation_per_skill", "8", "--mixing", "no_graph", "--eta", "0.5", "--rounds", "2"),
        *("--max_steps", "4", "--per_device_train_batch_size", "4", "--max_length", "64", "--output_dir"),
        *(
            str(tmp_path / "run"),
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "query_key_value",
            "dense_h_to_4h",
        ),
        *("--bf16", "false", "--gradient_checkpointing", "false", "--use_cpu", "--report_to", "none"),
        *("--save_strategy", "no", "--disable_tqdm", "true"),
    ]
    trainer = example.main(*parser.parse_args_and_config(args=flags))
    assert trainer.skills.train_skills == tuple(SKILLS) and trainer.skills.train_sizes() == dict.fromkeys(SKILLS)
    assert [r["global_step"] for r in trainer.trajectory] == [2, 4]
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


# ----- recipes: training.trainer: sft ---------------------------------------------------------------------------------


def lego_recipe(tmp_path, **training) -> dict:
    return {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "data": {"synthetic": "lego", "generator": {"k": 3}, "num_train_samples": 90, "validation_per_skill": 5},
        "graph": {"reasoning": "chain"},
        "training": {
            **dict(output_dir=str(tmp_path / "run"), max_steps=4, rounds=2, report_to="none", use_cpu=True),
            **dict(per_device_train_batch_size=4, disable_tqdm=True, save_strategy="no"),
            **training,
        },
    }


def test_recipe_trainer_sft_trains_with_trl(tmp_path):
    from hf_skillit.recipes import load_recipe, make_trainer

    raw = lego_recipe(tmp_path, trainer="sft", bf16=False, gradient_checkpointing=False, loss_type="nll")
    recipe = load_recipe(None, raw=raw)
    assert isinstance(recipe.training, SkillItSFTConfig) and recipe.training.loss_type == "nll"
    trainer = make_trainer(recipe)
    assert isinstance(trainer, SkillItSFTTrainer)
    trainer.train()
    assert [r["global_step"] for r in trainer.trajectory] == [2, 4]
    # LEGO rows come tokenized with answer-only labels: TRL keeps them, so the loss is the answer's.
    row = trainer.skills.validation("1")[0]
    assert sum(label != -100 for label in row["labels"]) < len(row["input_ids"]) / 2


def test_recipe_trainer_errors_name_the_key(tmp_path):
    from hf_skillit.recipes import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="training.trainer: unknown trainer 'stf'; did you mean 'sft'"):
        load_recipe(None, raw=lego_recipe(tmp_path, trainer="stf"))
    # TRL's fields belong to trainer: sft; without it they are unknown keys, with a did-you-mean of SkillItConfig's.
    with pytest.raises(RecipeError, match="unknown key 'completion_only_loss' in training"):
        load_recipe(None, raw=lego_recipe(tmp_path, completion_only_loss=True))
    with pytest.raises(RecipeError, match="unknown key 'completion_only_los' in training; did you mean"):
        load_recipe(None, raw=lego_recipe(tmp_path, trainer="sft", bf16=False, completion_only_los=True))


def test_without_trl_the_errors_name_the_extra(tmp_path, monkeypatch):
    import importlib
    import sys

    from hf_skillit.recipes import RecipeError, load_recipe

    monkeypatch.setitem(sys.modules, "trl", None)  # as if TRL were not installed
    monkeypatch.delitem(sys.modules, "hf_skillit.integrations.trl")
    with pytest.raises(ImportError, match=r"pip install 'hf-skillit\[trl\]'"):
        importlib.import_module("hf_skillit.integrations.trl")
    with pytest.raises(RecipeError, match=r"training.trainer: sft needs TRL: .*pip install 'hf-skillit\[trl\]'"):
        load_recipe(None, raw=lego_recipe(tmp_path, trainer="sft"))


class _RecordingSFT(SkillItSFTTrainer):
    """Keeps each training batch's input_ids and labels as `training_step` receives them."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.batches.append((inputs["input_ids"].clone(), inputs["labels"].clone()))
        return super().training_step(model, inputs, num_items_in_batch)


@pytest.mark.parametrize("strategy", ["wrapped", "bfd"])
def test_packing_is_trls_packing_per_skill_with_completion_masks_intact(tmp_path, strategy):
    # Prompt/completion rows of two skills; a word tells its skill (p/q) and whether it is prompt or completion (c/d).
    words = {"p": ("pp", "pc"), "q": ("qp", "qc")}
    vocab = [f"{w}{i}" for pair in words.values() for w in pair for i in range(40)]
    tokenizer = build_tokenizer(vocab)
    data = {
        skill: Dataset.from_dict(
            {
                "prompt": [" ".join([f"{prompt}{i}"] * (2 + i % 5)) for i in range(40)],
                "completion": [" " + " ".join([f"{completion}{i}"] * (1 + i % 3)) for i in range(40)],
            }
        )
        for skill, (prompt, completion) in words.items()
    }
    from conftest import tiny_config

    from hf_skillit.synthetic import make_tiny_model

    trainer = _RecordingSFT(
        model=make_tiny_model(tiny_config(tokenizer)),
        args=sft_config(
            tmp_path,
            mixing="stratified",
            rounds=2,
            max_steps=4,
            max_length=24,
            packing=True,
            packing_strategy=strategy,
        ),
        skills=SkillSet.from_dict(data, 4),
        processing_class=tokenizer,
    )
    trainer.batches = []
    eos = tokenizer.eos_token_id
    for skill, (prompt, completion) in words.items():
        rows = trainer.skills.train(skill)
        assert len(rows) < 36, "rows are packed: fewer rows than the skill's 36 training examples"
        for row in rows:
            tokens = [tokenizer.convert_ids_to_tokens(t) for t in row["input_ids"] if t != eos]
            assert {t[:2] for t in tokens} <= {prompt, completion}, f"a packed row mixes skills: {tokens}"
            for token, label in zip(row["input_ids"], row["labels"], strict=True):
                word = tokenizer.convert_ids_to_tokens(token)
                # Completion-only loss: completions (and their EOS) are labelled, prompts are not.
                assert (label != -100) == (token == eos or word.startswith(completion)), (word, label)
    trainer.train()
    labelled = sum(int((labels != -100).sum()) for _, labels in trainer.batches)
    assert sum(sum(record["tokens"].values()) for record in trainer.trajectory) == labelled > 0


def test_padding_free_batches_are_refused_over_several_processes(tmp_path, formats, chat_tokenizer, tiny_model):
    args = sft_config(tmp_path, packing=True)  # TRL's default strategy, bfd, implies padding-free batches
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SkillItSFTConfig, "world_size", property(lambda self: 2))
        with pytest.raises(ValueError, match="padding-free batches .* cannot be split over processes"):
            SkillItSFTTrainer(model=tiny_model(), args=args, skills=SkillSet.from_dict(formats, 16))
