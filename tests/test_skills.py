import pytest
from datasets import Dataset, IterableDataset

from hf_skillit.skills import SkillSet


def rows(n, start=0):
    return Dataset.from_dict({"id": list(range(start, start + n))})


def labelled(skills):
    return Dataset.from_dict({"id": list(range(len(skills))), "skill": list(skills)})


def test_constructor_keeps_insertion_order():
    skills = SkillSet({"zeta": rows(3), "alpha": rows(2)}, {"alpha": rows(1), "zeta": rows(1), "ood": rows(2)})
    assert skills.train_skills == ("zeta", "alpha")
    assert skills.eval_skills == ("alpha", "zeta", "ood")
    assert list(skills) == ["zeta", "alpha"] and len(skills) == 2
    assert "alpha" in skills and "ood" not in skills
    assert skills.train("zeta")["id"][:] == [0, 1, 2]
    assert len(skills.validation("ood")) == 2
    assert skills.train_sizes() == {"zeta": 3, "alpha": 2}
    assert repr(skills) == "SkillSet(train={'zeta': 3, 'alpha': 2}, validation={'alpha': 1, 'zeta': 1, 'ood': 2})"


def test_iterable_training_data_has_unknown_size():
    stream = rows(4).to_iterable_dataset()
    skills = SkillSet({"a": rows(2), "s": stream}, {})
    assert isinstance(skills.train("s"), IterableDataset)
    assert skills.train_sizes() == {"a": 2, "s": None}
    assert skills.eval_skills == ()


def test_lookup_errors_name_the_skill():
    skills = SkillSet({"a": rows(2), "b": rows(2)}, {"a": rows(1)})
    with pytest.raises(ValueError, match=r"unknown training skill 'c'; training skills: \['a', 'b'\]"):
        skills.train("c")
    with pytest.raises(ValueError, match=r"no validation data for skill 'b'.*\['a'\]"):
        skills.validation("b")


@pytest.mark.parametrize(
    ("train", "validation", "match"),
    [
        ({}, {}, "non-empty mapping"),
        ({"a": rows(2), "empty": rows(0)}, {}, "skill 'empty' has no training rows"),
        ({"a": rows(2)}, {"a": rows(0)}, "skill 'a' has no validation rows"),
        ({"a": [1, 2]}, {}, "skill 'a' must be a datasets.Dataset or IterableDataset, got list"),
        (
            {"a": rows(2)},
            {"a": rows(2).to_iterable_dataset()},
            "skill 'a' must be a datasets.Dataset, got IterableDataset",
        ),
        ({"": rows(2)}, {}, "non-empty strings, got ''"),
        ({3: rows(2)}, {}, "non-empty strings, got 3"),
        ({"a": rows(2)}, {"": rows(2)}, "validation skill names must be non-empty strings"),
    ],
)
def test_invalid(train, validation, match):
    with pytest.raises(ValueError, match=match):
        SkillSet(train, validation)


def test_from_dict_with_mapping():
    skills = SkillSet.from_dict({"b": rows(2), "a": rows(3)}, {"b": rows(1)})
    assert skills.train_skills == ("b", "a") and skills.eval_skills == ("b",)


def test_from_dict_holds_out_rows():
    skills = SkillSet.from_dict({"b": rows(10), "a": rows(6, start=100)}, 2, seed=1)
    for name, total in (("b", 10), ("a", 6)):
        train, held = skills.train(name)["id"][:], skills.validation(name)["id"][:]
        assert len(train) == total - 2 and len(held) == 2
        assert not set(train) & set(held)
        assert train == sorted(train)  # the remaining rows keep their order
    again = SkillSet.from_dict({"b": rows(10), "a": rows(6, start=100)}, 2, seed=1)
    assert again.validation("b")["id"][:] == skills.validation("b")["id"][:]


def test_from_dict_holds_out_a_streaming_skills_prefix():
    skills = SkillSet.from_dict({"s": rows(10).to_iterable_dataset(), "m": rows(10)}, 3)
    assert skills.validation("s")["id"][:] == [0, 1, 2]
    assert [row["id"] for row in skills.train("s")] == list(range(3, 10)), "training starts after the prefix"
    assert skills.train_sizes() == {"s": None, "m": 7}


def test_from_dict_hold_out_errors():
    with pytest.raises(ValueError, match="skill 'small' has 2 rows: holding out 2"):
        SkillSet.from_dict({"a": rows(5), "small": rows(2)}, 2)
    with pytest.raises(ValueError, match="streaming skill 's' has 2 rows: holding out 2"):
        SkillSet.from_dict({"s": rows(2).to_iterable_dataset()}, 2)
    with pytest.raises(ValueError, match=">= 1 rows per skill, got 0"):
        SkillSet.from_dict({"a": rows(5)}, 0)


def test_from_column_order_of_first_appearance():
    skills = SkillSet.from_column(labelled(["b", "a", "b", "c", "a"]))
    assert skills.train_skills == ("b", "a", "c")
    assert skills.train("b")["id"][:] == [0, 2]
    assert skills.train("c")["id"][:] == [3]
    assert skills.eval_skills == ()


def test_from_column_int_values_become_names():
    ds = Dataset.from_dict({"task": [3, 1, 3, 2]})
    skills = SkillSet.from_column(ds, column="task")
    assert skills.train_skills == ("3", "1", "2")
    assert skills.train_sizes() == {"3": 2, "1": 1, "2": 1}


def test_from_column_explicit_order():
    skills = SkillSet.from_column(labelled(["b", "a", "c"]), order=["c", "a", "b"])
    assert skills.train_skills == ("c", "a", "b")
    assert skills.train("a")["id"][:] == [1]


@pytest.mark.parametrize(
    ("order", "match"),
    [
        (["a", "b", "x"], r"not in the data: \['x'\]; missing from order: \['c'\]"),
        (["a", "b"], r"missing from order: \['c'\]"),
        (["a", "b", "c", "a"], r"more than once: \['a'\]"),
    ],
)
def test_from_column_bad_order(order, match):
    with pytest.raises(ValueError, match=match):
        SkillSet.from_column(labelled(["b", "a", "c"]), order=order)


def test_from_column_missing_column():
    with pytest.raises(ValueError, match=r"no column 'skill'; available columns: \['id', 'task'\]"):
        SkillSet.from_column(Dataset.from_dict({"id": [0], "task": ["a"]}))


def test_from_column_null_skill():
    with pytest.raises(ValueError, match="row 1 has no value in column 'skill'"):
        SkillSet.from_column(labelled(["a", None]))


def test_from_column_int_validation_is_disjoint():
    ds = labelled(["a"] * 7 + ["b"] * 5 + ["a"] * 3)
    skills = SkillSet.from_column(ds, validation=2, seed=3)
    assert skills.train_skills == skills.eval_skills == ("a", "b")
    assert skills.train_sizes() == {"a": 8, "b": 3}
    seen = []
    for name in ("a", "b"):
        train, held = skills.train(name), skills.validation(name)
        assert len(held) == 2
        assert set(train["skill"][:]) == set(held["skill"][:]) == {name}
        assert not set(train["id"][:]) & set(held["id"][:])
        seen += train["id"][:] + held["id"][:]
    assert sorted(seen) == list(range(15))
    with pytest.raises(ValueError, match="skill 'b' has 5 rows: holding out 5"):
        SkillSet.from_column(ds, validation=5)


def test_from_column_validation_dataset_with_eval_only_skills():
    validation = labelled(["ood", "b", "ood", "other"])
    skills = SkillSet.from_column(labelled(["a", "b", "a"]), validation=validation)
    # "a" has no validation data (allowed); "ood" and "other" are evaluation-only.
    assert skills.train_skills == ("a", "b")
    assert skills.eval_skills == ("b", "ood", "other")
    assert skills.validation("ood")["id"][:] == [0, 2]
    with pytest.raises(ValueError, match="validation dataset has no column 'skill'"):
        SkillSet.from_column(labelled(["a"]), validation=rows(3))


def test_from_column_many_skills():
    names = [f"skill {i}" for i in range(1000)]
    skills = SkillSet.from_column(labelled([names[i % 1000] for i in range(3000)]))
    assert skills.train_skills == tuple(names)
    assert skills.train("skill 7")["id"][:] == [7, 1007, 2007]
    assert repr(skills).endswith("... (992 more)}, validation={})")


def test_subset():
    skills = SkillSet({"a": rows(2), "b": rows(3), "c": rows(4)}, {"a": rows(1), "c": rows(1), "ood": rows(1)})
    sub = skills.subset(["c", "b"])
    assert sub.train_skills == ("c", "b")
    assert sub.eval_skills == ("c",)
    with pytest.raises(ValueError, match=r"unknown training skills \['ood'\]"):
        skills.subset(["a", "ood"])
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        skills.subset(["a", "a"])
