import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hf_skillit import SkillsGraph
from hf_skillit.recipes import RecipeError, build, lego_reasoning_graph, load_natural_instructions, load_recipe
from hf_skillit.synthetic import build_tokenizer, make_lego, make_tiny_model, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# (eta, rounds T, window w, steps) of the paper's Appendix C.3 for each recipe of a paper setting (None: not set).
PAPER_SETTINGS = {
    "lego_pretrain_full.yaml": (0.5, 6, 3, 6000),
    "lego_finetune_lora.yaml": (0.5, 10, 3, 6000),
    "addition_pretrain.yaml": (0.1, 5, 3, 6000),
    "sni_pretrain.yaml": (0.2, 1, None, 5000),
    "redpajama_ood.yaml": (100.0, 1, None, None),  # 3B tokens
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The CLI runs tiny models on one thread (a process-wide setting): give the next tests their own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_recipe(**sections) -> dict:
    """A small LEGO recipe as a mapping; `sections` replace or extend its sections."""
    raw = {
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "data": {"synthetic": "lego", "generator": {"k": 3}, "num_train_samples": 90, "validation_per_skill": 5},
        "graph": {"reasoning": "chain"},
        "training": {"output_dir": "unused", "max_steps": 6, "rounds": 3, "report_to": "none"},
    }
    for name, values in sections.items():
        raw[name] = values if values is None else {**(raw.get(name) or {}), **values}
    return raw


def uses_user_data(raw: dict) -> bool:
    return "synthetic" not in raw["data"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates_offline(path, tmp_path, monkeypatch):
    # A working directory with the shipped recipes (and graphs) but nothing a run or a download would produce.
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    monkeypatch.chdir(tmp_path)
    recipe_path = f"recipes/{path.name}"
    raw = yaml.safe_load(path.read_text())
    # TrainingArguments refuses mixed precision on a machine without an accelerator.
    overrides = [] if torch.cuda.is_available() or not raw["training"].get("bf16") else ["training.bf16=false"]
    if path.name in PAPER_SETTINGS:
        eta, rounds, window, steps = PAPER_SETTINGS[path.name]
        training = raw["training"]
        assert (training["eta"], training["rounds"]) == (eta, rounds)
        assert steps is None or training["max_steps"] == steps
        assert window is None or training["window"] == window
    if uses_user_data(raw):
        # The error names the missing path and says how to get the data.
        with pytest.raises(RecipeError, match="not found") as err:
            load_recipe(recipe_path, overrides)
        assert " ".join(raw["data"]["download"].split()) in str(err.value)
        return
    graph_path = (raw.get("graph") or {}).get("path")
    if graph_path is not None and not Path(graph_path).exists():
        # A graph to be learned first: the error says how; the rest of the recipe is valid.
        with pytest.raises(RecipeError, match=f"not found; learn it with `hf-skillit learn-graph {recipe_path}`"):
            load_recipe(recipe_path, overrides)
        load_recipe(recipe_path, overrides, check_graph=False)
        return
    load_recipe(recipe_path, overrides)


def test_default_recipe_is_the_cpu_lego_demo(monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = load_recipe("recipes/lego_pretrain.yaml")
    assert recipe.model.tiny is not None and recipe.data.synthetic == "lego" and recipe.data.answer_only
    assert recipe.graph.path == "recipes/graphs/lego_k3.json" and recipe.learn_graph.edge_rule == "lego"


def test_overrides_parse_yaml_values_and_nested_keys():
    recipe = load_recipe(
        None,
        [
            "training.learning_rate=1e-3",
            "training.target_skills=[3]",
            "model.tiny.hidden_size=64",
            "graph.edge_weight=1",
        ],
        raw=tiny_recipe(),
    )
    assert recipe.training.learning_rate == 1e-3
    assert recipe.training.target_skills == ["3"]  # LEGO skill names read as YAML ints become names
    assert recipe.model.tiny["hidden_size"] == 64
    assert recipe.graph.edge_weight == 1.0 and isinstance(recipe.graph.edge_weight, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.learning_rat=0.1"], "unknown key 'learning_rat' in training; did you mean 'learning_rate'"),
        (["trainig.max_steps=6"], "unknown key 'trainig' in the recipe; did you mean 'training'"),
        (["model.tiny.hidden_sise=8"], "unknown key 'hidden_sise' in model.tiny; did you mean 'hidden_size'"),
        (["data.generator.kk=4"], "unknown key 'kk' in data.generator; did you mean 'k'"),
        (["model.lora.rank=4"], "unknown key 'rank' in model.lora"),
        (["training.max_steps=many"], "training.max_steps must be int, got 'many'"),
        (["data.answer_only=3"], "data.answer_only must be bool"),
        (["training.max_steps=7"], "not a multiple of rounds=3"),
        (["training.maxsteps"], "must look like section.key=value"),
        (["data.synthetic=sudoku"], "data.synthetic must be one of lego, addition"),
        (["graph.path=graphs/none.json"], "give one of path, reasoning, matrix"),
        (["graph.reasoning=null", "graph.path=graphs/none.json"], "graph.path: 'graphs/none.json' not found"),
        (["model.name_or_path=./no/such/model"], "exactly one of name_or_path"),
        (["training.graph_path=g.json"], "set graph.path instead"),
        (["learn_graph.method=exhaustive"], "learn_graph.method must be one of brute_force, approximate"),
        (["learn_graph.edge_rule=lego"], "edge_rule: lego needs it"),
        (["lm_eval.metric=nll"], "lm_eval.tasks is required"),
        (["lm_eval.tasks=[x]", "lm_eval.limt=3"], "unknown key 'limt' in lm_eval; did you mean 'limit'"),
        (["lm_eval.tasks=[x]", "lm_eval.include_path=no/tasks"], "lm_eval.include_path: 'no/tasks' not found"),
        (["model.tiny=null", "model.name_or_path=runs/no/model"], "model.name_or_path: 'runs/no/model' not found"),
        (["model.tiny=null", "model.name_or_path=./no/model"], "model.name_or_path: './no/model' not found"),
    ],
)
def test_recipe_errors_name_the_key(overrides, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(None, overrides, raw=tiny_recipe())
    assert message in str(err.value)


def test_missing_user_data_says_what_to_download(tmp_path):
    raw = tiny_recipe(data=None)
    raw["data"] = {"train_files": {"a": str(tmp_path / "a.jsonl")}, "download": "Fetch a.jsonl from the bucket."}
    with pytest.raises(RecipeError, match=r"data.train_files\['a'\]: '.*a.jsonl' not found. Fetch a.jsonl"):
        load_recipe(None, raw=raw)
    raw["data"] = {"natural_instructions": str(tmp_path / "tasks")}
    with pytest.raises(RecipeError, match="not found.*git clone https://github.com/allenai/natural-instructions"):
        load_recipe(None, raw=raw)


def test_lego_reasoning_graphs():
    chain = lego_reasoning_graph(["1", "2", "3"], "chain")
    np.testing.assert_array_equal(chain.matrix, [[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]])
    tree = lego_reasoning_graph(["1", "2", "3", "4"], "tree", edge_weight=0.3)
    np.testing.assert_array_equal(tree.matrix[0], [1, 0.3, 0.3, 0])
    assert tree.matrix[1, 3] == 0.3


def test_build_synthetic_checks_graph_and_targets(tmp_path):
    model, tokenizer, skills, graph, config, evaluators = build(load_recipe(None, raw=tiny_recipe()))
    assert evaluators == []
    assert skills.train_skills == ("1", "2", "3") and graph.train_skills == ("1", "2", "3")
    assert len(skills.validation("2")) == 5
    row = skills.train("1")[0]
    assert sum(label != -100 for label in row["labels"]) == 1  # answer-only: one scored token
    assert model.config.max_position_embeddings >= len(row["input_ids"])

    with pytest.raises(RecipeError, match="unknown skill '7'"):
        build(load_recipe(None, ["training.target_skills=[7]"], raw=tiny_recipe()))
    SkillsGraph(np.eye(2), ["1", "2"]).save(tmp_path / "g.json")
    overrides = ["graph.reasoning=null", f"graph.path={tmp_path / 'g.json'}"]
    with pytest.raises(RecipeError, match=r"does not match the data's training skills: not in the graph \['3'\]"):
        build(load_recipe(None, overrides, raw=tiny_recipe()))
    overrides = ["graph.reasoning=null", "graph.matrix=[[1, 0], [0, 1]]"]
    with pytest.raises(RecipeError, match="graph.matrix: matrix has shape"):
        build(load_recipe(None, overrides, raw=tiny_recipe()))
    with pytest.raises(RecipeError, match="needs a skills graph"):
        build(load_recipe(None, ["graph.reasoning=null"], raw=tiny_recipe()))


def test_build_user_files_per_skill_and_skill_column(tmp_path):
    tokenizer_dir = tmp_path / "tok"
    build_tokenizer().save_pretrained(tokenizer_dir)
    texts = {s: [f"Input : {s} = val 1 . Output : {s} = 1 ." for _ in range(12)] for s in ("a", "b")}
    for s, rows in texts.items():
        (tmp_path / f"{s}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    with open(tmp_path / "all.csv", "w") as f:
        f.write("text,skill\n" + "".join(f"{t},{s}\n" for s, rows in texts.items() for t in rows))
    model = {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}, "tokenizer": str(tokenizer_dir)}
    per_skill = {
        "train_files": {s: str(tmp_path / f"{s}.jsonl") for s in ("a", "b")},
        "validation_per_skill": 2,
        "skills": ["b", "a"],
    }
    graph = {"matrix": [[1, 0.5], [0, 1]]}
    parts = build(load_recipe(None, raw={**tiny_recipe(), "model": model, "data": per_skill, "graph": graph}))
    assert parts.skills.train_skills == ("b", "a") and len(parts.skills.train("a")) == 10
    assert parts.graph.matrix[0, 1] == 0.5 and parts.graph.train_skills == ("b", "a")

    column = {"train_file": str(tmp_path / "all.csv"), "validation_per_skill": 3}
    base = tiny_recipe(training={"mixing": "stratified"})
    parts = build(load_recipe(None, raw={**base, "model": model, "data": column, "graph": None}))
    assert parts.skills.train_skills == ("a", "b") and len(parts.skills.validation("b")) == 3


def test_build_user_data_with_tiny_model_needs_a_tokenizer(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    data = {"train_files": {"a": str(tmp_path / "a.jsonl")}}
    with pytest.raises(RecipeError, match="needs model.tokenizer"):
        build(load_recipe(None, raw={**tiny_recipe(), "data": data, "graph": None}))


def test_natural_instructions_skills(tmp_path):
    for i, (category, language) in enumerate([("Question Answering", "English"), ("Question Generation", "Spanish")]):
        task = {
            "Categories": [category],
            "Input_language": [language],
            "Definition": [f"Do task {i}."],
            "Instances": [{"input": f"in {j}", "output": [f"out {j}", "alt"]} for j in range(4)],
        }
        (tmp_path / f"task00{i}_x.json").write_text(json.dumps(task))
    ds = load_natural_instructions(str(tmp_path), max_samples_per_task=3)
    assert sorted(set(ds["skill"])) == ["question_answering", "question_generation"] and len(ds) == 6
    assert ds[0]["text"] == "Definition: Do task 0.\n\nInput: in 0\nOutput: out 0"
    ds = load_natural_instructions(str(tmp_path), "category_language", skills=["question_generation_spanish"])
    assert set(ds["skill"]) == {"question_generation_spanish"} and set(ds["task"]) == {"task001_x"}

    build_tokenizer().save_pretrained(tmp_path / "tok")
    raw = tiny_recipe(graph=None, training={"mixing": "stratified"})
    raw["model"]["tokenizer"] = str(tmp_path / "tok")
    raw["data"] = {"natural_instructions": str(tmp_path), "validation_per_skill": 1, "skills": ["question_generation"]}
    skills = build(load_recipe(None, raw=raw)).skills
    assert skills.train_skills == ("question_generation",) and len(skills.train("question_generation")) == 3
    with pytest.raises(RecipeError, match="no task of skills"):
        build(load_recipe(None, ["data.skills=[poetry]"], raw=raw))


def test_checkpoint_with_a_bpe_tokenizer_and_lora(tmp_path):
    """The `name_or_path` code path: from_pretrained on a local checkpoint whose tokenizer is byte-level BPE
    (like GPT-Neo's), wrapped with LoRA, on LEGO data (answers must tokenize as they do inside the text)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(make_lego(200, k=3)["text"], vocab_size=300, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    config = tiny_model_config("gpt2", tokenizer=None, vocab_size=len(tokenizer), hidden_size=32, num_layers=1)
    make_tiny_model(config).save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")

    raw = tiny_recipe(model=None)
    raw["model"] = {
        "name_or_path": str(tmp_path / "ckpt"),
        "lora": {"r": 4, "target_modules": ["c_attn"], "fan_in_fan_out": True},
    }
    model, tokenizer, skills, *_ = build(load_recipe(None, raw=raw))
    assert type(model).__name__ == "PeftModelForCausalLM"
    assert tokenizer.pad_token == "<|endoftext|>"
    row = skills.validation("3")[0]
    answer = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tokenizer.decode(answer).strip() in ("0", "1")


def test_out_of_domain_recipe_with_lm_eval_tasks(tmp_path, capsys):
    """Evaluation skills that are lm-eval tasks (a local task here): the graph's columns, scored every round."""
    from hf_skillit.cli import main

    rows = [{"context": f"Input : {v} = val", "target": f" {i % 2}"} for i, v in enumerate("abcdefgh")]
    (tmp_path / "val_copy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "val_copy.yaml").write_text(
        "task: val_copy\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {tmp_path / 'val_copy.jsonl'}}}}}\n"
        "test_split: test\noutput_type: loglikelihood\ndoc_to_text: '{{context}}'\ndoc_to_target: '{{target}}'\n"
    )
    raw = tiny_recipe(graph={"reasoning": None, "matrix": [[1.0], [0.5], [0.0]], "eval_skills": ["val_copy"]})
    raw["training"].update({"output_dir": str(tmp_path / "run"), "max_steps": 4, "rounds": 2, "use_cpu": True})
    raw["lm_eval"] = {"tasks": ["val_copy"], "include_path": str(tmp_path), "include_defaults": False}
    (tmp_path / "ood.yaml").write_text(yaml.safe_dump(raw))

    parts = build(load_recipe(tmp_path / "ood.yaml"))
    assert parts.graph.eval_skills == ("val_copy",) and parts.evaluators[0].skills == ("val_copy",)
    with pytest.raises(RecipeError, match=r"evaluation skill\(s\) \['other'\] have neither validation data"):
        build(load_recipe(tmp_path / "ood.yaml", ["graph.eval_skills=[other]"]))

    assert main(["train", str(tmp_path / "ood.yaml")]) == 0
    rounds = [json.loads(line) for line in (tmp_path / "run" / "skillit_trajectory.jsonl").read_text().splitlines()]
    assert len(rounds) == 2 and "val_copy" in rounds[0]["eval_loss"]
    assert "val_copy" in capsys.readouterr().out
