"""The settings of the GPU comparison (`benchmarks/gpu/run.py`), in one place: the model file, the tasks (the paper's
LEGO and addition settings), the batch, learning rate and validation sizes, and the fine-tuning table's settings
(chosen on the CPU by issue 20). Smoke-mode sizes are in `run._run_everything`."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98362432
# part1 + the wheels (16 MiB) + the repository, and part2 (50 MiB) + the repository, each stay under a call's 64 MiB.
PART_BYTES = 44 * 2**20
TASKS = {
    # task: skills, eta, rounds T, window w, imbalanced proportions of the random baseline (paper)
    "lego": {"skills": ["1", "2", "3", "4", "5"], "eta": 0.5, "rounds": 6, "window": 3, "random": [1, 1, 1, 3, 5]},
    "addition": {"skills": ["1", "2", "3"], "eta": 0.1, "rounds": 5, "window": 3, "random": [13, 14, 18]},
}
# Continual pre-training (paper Appendix C.3): every weight trained, batch 32, lr 5e-5.
BATCH = 32
LR = 5e-5
VALIDATION_PER_SKILL = 100
EVAL_BATCH = 64
# The reference code's LEGO pre-training graph (HazyResearch/skill-it scripts/lego/pt/skillit.sh): row "2" has 1 on
# skills 1-4, the diagonal 1; trainer/mw_trainer.py turns every off-diagonal 1 into 0.5.
CODE_LEGO_GRAPH = [
    [1.0, 0.0, 0.0, 0.0, 0.0],
    [0.5, 1.0, 0.5, 0.5, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
]

# ----- fine-tuning on LEGO k = 5, target skill 3 (paper §4.2), at the settings issue 20 chose on the CPU ----------
# benchmarks/RESULTS.md, "Issue 20"; the CPU tables run `recipes/lego_finetune_smollm2_lora.yaml` with these
# (benchmarks/smollm2/tables.py): LoRA r16 on the attention projections, lr 5e-4, batch 8, bf16 autocast (on the
# GPU where it supports bf16). `tests/test_gpu_script.py` checks the LoRA settings and lr against the recipe.
FINETUNE_TARGET = "3"
FINETUNE_LORA = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
FINETUNE_LR = 5e-4
FINETUNE_BATCH = 8
# Skill-It's eta and window: chosen by the issue-20 grid on tuning seeds 100 and 101 (RESULTS.md, "Issue 20": eta 2
# gave skill-3 loss 0.078 at step 240 against 0.121 for the paper's 0.5; k = 3, 240 steps, so a GPU run at k = 5
# and 6000 steps tests whether the choice carries over).
FINETUNE_ETA = 2.0
FINETUNE_WINDOW = 3
# Rounds T: the CPU tables' 12 (the grid chose eta and window with it); the paper's LEGO fine-tuning has T 10.
FINETUNE_ROUNDS = 12
# At most the paper's 6000 steps; as many as the budget allows.
FINETUNE_MAX_STEPS = 6000
# k = 5 has no learned graph (recipes/graphs/lego_k3_smollm2.json is k = 3): the recipe's reasoning chain, diagonal 1
# and i -> i+1 of 0.5, whose target column gives skill 3 the prerequisite 2.
FINETUNE_GRAPH = "chain"
# The methods, as `SkillItConfig` fields (the CPU tables' `METHODS`); every one gets the graph and the target.
FINETUNE_METHODS = {
    "skill_it": {"mixing": "skill_it"},
    "target_only": {"mixing": "fixed", "fixed_weights": {FINETUNE_TARGET: 1.0}},
    "stratified": {"mixing": "stratified"},
}
# The tables: steps until each skill's validation loss is at most these.
THRESHOLDS = (0.3, 0.1)
