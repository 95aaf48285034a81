"""Every Python block of README.md runs as written, with fewer training steps (`MAX_STEPS`), so the README cannot
rot. Each block runs in its own interpreter, in a scratch directory where `recipes/` is the repository's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
STEPS = 12  # two steps per round of the example's six


def test_the_readme_has_python_blocks():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(tmp_path, index):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes", target_is_directory=True)
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index])
    env = {**os.environ, "MAX_STEPS": str(STEPS), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"README Python block {index} failed:\n{BLOCKS[index]}\n{done.stderr[-3000:]}"
    if "SkillItTrainer(" in BLOCKS[index]:
        # The example trained MAX_STEPS steps in six rounds and printed one line per round.
        trajectory = next(tmp_path.glob("runs/*/skillit_trajectory.jsonl"))
        rounds = [json.loads(line) for line in trajectory.read_text().splitlines()]
        assert [r["global_step"] for r in rounds] == [2, 4, 6, 8, 10, 12]
        assert done.stdout.count("round ") == 6
        assert list(rounds[0]["p"]) == ["1", "2", "3"]
