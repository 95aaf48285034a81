"""hf_skillit: Skill-It online data selection (arXiv 2307.14430) for the Hugging Face training stack.

The public names are imported on first use (PEP 562 module `__getattr__`): `import hf_skillit` and the
`hf-skillit` CLI's `--help` and recipe errors do not pay for transformers' `Trainer`, peft and lm-eval, which take
seconds to import. `from hf_skillit import SkillItTrainer` imports exactly what that name needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> submodule defining it
_EXPORTS = {
    "AioliMixer": "aioli",
    "LMCollator": "collator",
    "SkillItConfig": "config",
    "SkillsGraph": "graph",
    "learn_graph": "graph_learning",
    "merge_runs": "graph_learning",
    "FixedMixer": "mixing",
    "Mixer": "mixer_registry",
    "ProportionalMixer": "mixing",
    "SkillItMixer": "mixing",
    "StaticMixer": "mixing",
    "StratifiedMixer": "mixing",
    "make_mixer": "mixing",
    "MixerSetup": "mixer_registry",
    "register_mixer": "mixer_registry",
    "SkillSet": "skills",
    "SkillItTrainer": "trainer",
    "last_complete_checkpoint": "trainer",
}

__all__ = [
    "AioliMixer",
    "FixedMixer",
    "LMCollator",
    "Mixer",
    "MixerSetup",
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
    "register_mixer",
]  # = the keys of _EXPORTS (tests/test_cli.py checks)


__getattr__, __dir__ = lazy_exports(globals(), {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})


if TYPE_CHECKING:  # static analysers and IDEs see the real imports
    from .aioli import AioliMixer
    from .collator import LMCollator
    from .config import SkillItConfig
    from .graph import SkillsGraph
    from .graph_learning import learn_graph, merge_runs
    from .mixer_registry import Mixer, MixerSetup, register_mixer
    from .mixing import (
        FixedMixer,
        ProportionalMixer,
        SkillItMixer,
        StaticMixer,
        StratifiedMixer,
        make_mixer,
    )
    from .skills import SkillSet
    from .trainer import SkillItTrainer, last_complete_checkpoint
