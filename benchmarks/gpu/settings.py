"""The settings of the GPU comparison (`benchmarks/gpu/run.py`), in one place: the model file, the tasks (the paper's
LEGO and addition settings), the batch, learning rate and validation sizes. Smoke-mode sizes are in
`run._run_everything`."""

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
