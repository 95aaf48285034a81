"""hf_skillit: Skill-It online data selection (arXiv 2307.14430) for the Hugging Face training stack."""

from .collator import LMCollator
from .config import SkillItConfig
from .graph import SkillsGraph
from .graph_learning import learn_graph, merge_runs
from .mixing import (
    MIXERS,
    FixedMixer,
    Mixer,
    ProportionalMixer,
    SkillItMixer,
    StaticMixer,
    StratifiedMixer,
    make_mixer,
)
from .skills import SkillSet
from .trainer import SkillItTrainer, last_complete_checkpoint

__version__ = "0.1.0"

__all__ = [
    "MIXERS",
    "FixedMixer",
    "LMCollator",
    "Mixer",
    "ProportionalMixer",
    "SkillItConfig",
    "SkillItMixer",
    "SkillItTrainer",
    "SkillSet",
    "SkillsGraph",
    "StaticMixer",
    "StratifiedMixer",
    "last_complete_checkpoint",
    "learn_graph",
    "make_mixer",
    "merge_runs",
]
