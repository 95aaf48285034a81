"""The mixer registry: a user's mixer registered in one line trains from `SkillItConfig(mixing=...)` and from a
recipe; the curricula are registered mixers too."""

import numpy as np
import pytest
from test_recipes import tiny_recipe

from hf_skillit import LMCollator, SkillItConfig, SkillItTrainer, SkillsGraph
from hf_skillit.curriculum import SkillCurriculumMixer, curriculum_setup, skill_curriculum_setup
from hf_skillit.mixer_registry import mixer_names, register_mixer, unregister_mixer
from hf_skillit.mixing import make_mixer
from hf_skillit.recipes import load_recipe, make_trainer


class HardestFirst:
    """A user's mixer: after each round, all weight on the evaluation skill with the highest loss."""

    name = "hardest_first_test"

    def __init__(self, train_skills):
        self.train_skills = tuple(train_skills)
        self.eval_skills = self.train_skills
        self.round = 0

    @classmethod
    def from_setup(cls, setup):
        return cls(setup.train_skills)

    def initial(self):
        return np.full(len(self.train_skills), 1.0 / len(self.train_skills))

    def update(self, eval_losses):
        self.round += 1
        p = np.zeros(len(self.train_skills))
        p[int(np.argmax([eval_losses[s] for s in self.eval_skills]))] = 1.0
        return p

    def state_dict(self):
        return {"round": self.round}

    def load_state_dict(self, state):
        self.round = state["round"]


@pytest.fixture
def hardest_first():
    register_mixer(HardestFirst)
    yield HardestFirst
    unregister_mixer(HardestFirst.name)


def check_hardest_first(trajectory, skills=("1", "2", "3")):
    assert len(trajectory) == 2
    first, second = trajectory
    hardest = max(skills, key=lambda s: first["eval_loss"][s])
    assert second["p"] == {s: float(s == hardest) for s in skills}
    assert sum(second["samples"].values()) == second["samples"][hardest] > 0


def test_a_registered_mixer_trains_from_the_config(hardest_first, make_config, tokenizer, tiny_model, skills):
    args = make_config(mixing=hardest_first.name, rounds=2, max_steps=4)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    assert isinstance(trainer.mixer, HardestFirst)
    trainer.train()
    check_hardest_first(trainer.trajectory)


def test_a_registered_mixer_trains_from_a_recipe(hardest_first, tmp_path):
    training = {"mixing": hardest_first.name, "output_dir": str(tmp_path), "max_steps": 4, "rounds": 2}
    raw = tiny_recipe(training={**training, "use_cpu": True, "disable_tqdm": True, "save_strategy": "no"})
    trainer = make_trainer(load_recipe(None, raw=raw))
    trainer.train()
    check_hardest_first(trainer.trajectory)


def test_registry_names_and_errors(hardest_first, tmp_path):
    names = mixer_names()
    assert names[:6] == ("skill_it", "static", "stratified", "random", "no_graph", "fixed")
    assert {"curriculum", "anticurriculum", "skill_curriculum", "skill_anticurriculum", hardest_first.name} <= set(
        names
    )
    unregister_mixer(hardest_first.name)
    with pytest.raises(ValueError, match="mixing='hardest_first_test' is not one of skill_it, static"):
        SkillItConfig(output_dir=str(tmp_path), max_steps=2, rounds=1, mixing=hardest_first.name)
    register_mixer(hardest_first)
    with pytest.raises(ValueError, match="already registered"):
        register_mixer(type("Other", (HardestFirst,), {}))
    with pytest.raises(ValueError, match="needs a classmethod from_setup"):
        register_mixer(type("NoSetup", (), {"name": "no_setup"}))
    with pytest.raises(ValueError, match="'skill_curriculum' ranks the training data by the model's loss"):
        make_mixer("skill_curriculum", graph=SkillsGraph.identity(["a", "b"]))


def test_skill_curriculum_by_name(make_config, tokenizer, tiny_model, skills):
    collator = LMCollator(pad_token_id=tokenizer.pad_token_id)
    order, schedule = skill_curriculum_setup(skills, tiny_model(), collator, rounds=4)
    args = make_config(mixing="skill_curriculum", rounds=4, max_steps=4)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    trainer.train()
    for record, weights in zip(trainer.trajectory, schedule, strict=True):
        assert record["p"] == pytest.approx(weights)
    # The schedule travels with the checkpoint state: a mixer rebuilt another way resumes it.
    resumed = SkillCurriculumMixer(("1", "2", "3"), schedule=[{"1": 1.0}])
    resumed.load_state_dict(trainer.mixer.state_dict())
    np.testing.assert_allclose(resumed.current, trainer.mixer.current)
    assert order[0] == max(order, key=lambda s: schedule[0][s])


def test_sample_curriculum_by_name_trains_on_difficulty_buckets(make_config, tokenizer, tiny_model, skills):
    collator = LMCollator(pad_token_id=tokenizer.pad_token_id)
    buckets, schedule = curriculum_setup(skills, tiny_model(), collator, 3)
    args = make_config(mixing="curriculum", rounds=3, max_steps=6)
    trainer = SkillItTrainer(model=tiny_model(), args=args, skills=skills, processing_class=tokenizer)
    assert trainer.skills.train_skills == ("difficulty_1", "difficulty_2", "difficulty_3")
    assert trainer.skills.eval_skills == ("1", "2", "3")
    assert [len(trainer.skills.train(b)) for b in buckets.train_skills] == [len(buckets.train(b)) for b in buckets]
    trainer.train()
    for phase, (record, weights) in enumerate(zip(trainer.trajectory, schedule, strict=True), start=1):
        assert record["p"] == pytest.approx(weights)
        assert all(record["samples"][f"difficulty_{b}"] == 0 for b in range(phase + 1, 4))
        assert set(record["eval_loss"]) == {"1", "2", "3"}
