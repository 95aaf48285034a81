"""The Examples of the public docstrings run as written (doctest), in a scratch working directory."""

import doctest
import importlib.util
import inspect

import pytest

from hf_skillit import SkillItConfig, SkillItTrainer
from hf_skillit.graph_learning import GraphLearningArguments


@pytest.mark.parametrize(
    "documented", [SkillItConfig, SkillItTrainer, GraphLearningArguments], ids=lambda c: c.__name__
)
def test_docstring_example_runs(documented, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write into runs/
    if importlib.util.find_spec("deepspeed"):
        # DeepSpeed (a test extra) prints "Setting accelerator to CPU" to stdout the first time a process asks for
        # its accelerator, which the Trainer does: a line of DeepSpeed's, once per process, not the example's output.
        # Asked here first, the test no longer depends on which test ran before it.
        from deepspeed.accelerator import get_accelerator

        get_accelerator()
    # The Markdown fences around an example are not part of its expected output.
    text = "\n".join(line for line in inspect.getdoc(documented).splitlines() if not line.strip().startswith("```"))
    test = doctest.DocTestParser().get_doctest(text, {}, documented.__name__, None, 0)
    assert test.examples, f"{documented.__name__} has no Example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
