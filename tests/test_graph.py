import json

import numpy as np
import pytest

from hf_skillit.graph import SkillsGraph


@pytest.fixture
def square():
    # Off-diagonal positives: a->b (1) and c->a (0.2); b->c is negative (allowed: a raw loss change).
    return SkillsGraph([[5.0, 1.0, 0.0], [0.0, 7.0, -1.0], [0.2, 0.0, 0.0]], ["a", "b", "c"], metadata={"seed": 3})


def test_defaults_and_read_only_copy():
    data = np.array([[1.0, 2.0], [3.0, 4.0]])
    graph = SkillsGraph(data, ["a", "b"])
    data[0, 0] = 100.0
    assert graph.eval_skills == graph.train_skills == ("a", "b")
    assert graph.matrix.dtype == np.float64 and graph.matrix[0, 0] == 1.0
    assert graph.shape == (2, 2)
    with pytest.raises(ValueError):
        graph.matrix[0, 0] = 5.0


def test_rectangular():
    graph = SkillsGraph(np.zeros((3, 2)), ["a", "b", "c"], ["x", "y"])
    assert graph.eval_skills == ("x", "y")


@pytest.mark.parametrize(
    ("matrix", "train", "evaluation", "match"),
    [
        (np.zeros((2, 3)), ["a", "b"], None, r"shape \(2, 3\).*2 training skills and 2 evaluation skills"),
        (np.zeros((2, 2)), ["a", "b"], ["x", "y", "z"], r"2 training skills and 3 evaluation skills"),
        (np.zeros(2), ["a", "b"], None, r"shape \(2,\)"),
        (np.zeros((2, 2)), ["a", "a"], None, r"duplicate training skill names: \['a'\]"),
        (np.zeros((2, 2)), ["a", "b"], ["x", "x"], r"duplicate evaluation skill names: \['x'\]"),
        (np.zeros((2, 2)), ["a", ""], None, r"non-empty strings, got ''"),
        (np.zeros((2, 2)), ["a", 3], None, r"non-empty strings, got 3"),
        (np.zeros((2, 2)), "ab", None, r"got the string 'ab'"),
        (np.zeros((0, 0)), [], None, r"at least one training skill"),
        ([[0.0, np.nan], [0.0, 0.0]], ["a", "b"], ["x", "y"], r"'a' -> evaluation skill 'y' is nan"),
        ([[0.0, 0.0], [np.inf, 0.0]], ["a", "b"], ["x", "y"], r"'b' -> evaluation skill 'x' is inf"),
    ],
)
def test_invalid(matrix, train, evaluation, match):
    with pytest.raises(ValueError, match=match):
        SkillsGraph(matrix, train, evaluation)


def test_identity_and_complete():
    identity = SkillsGraph.identity(["a", "b"])
    np.testing.assert_array_equal(identity.matrix, np.eye(2))
    complete = SkillsGraph.complete(["a", "b"], ["x", "y", "z"])
    np.testing.assert_array_equal(complete.matrix, np.ones((2, 3)))
    assert complete.eval_skills == ("x", "y", "z")


def test_restrict(square):
    restricted = square.restrict(["c", "a"])
    assert restricted.train_skills == ("a", "b", "c")
    assert restricted.eval_skills == ("c", "a")
    np.testing.assert_array_equal(restricted.matrix, [[0.0, 5.0], [-1.0, 0.0], [0.0, 0.2]])
    assert restricted.metadata == {"seed": 3}
    with pytest.raises(ValueError, match=r"unknown evaluation skills \['zz'\]"):
        square.restrict(["a", "zz"])


def test_reorder(square):
    rows_only = square.reorder(["c", "a", "b"])
    assert rows_only.eval_skills == ("a", "b", "c")
    np.testing.assert_array_equal(rows_only.matrix[0], [0.2, 0.0, 0.0])
    both = square.reorder(["c", "a", "b"], ["b", "c", "a"])
    # Entry (training a, evaluation b) is 1 wherever it moves.
    assert both.matrix[1, 0] == 1.0
    np.testing.assert_array_equal(both.reorder(["a", "b", "c"], ["a", "b", "c"]).matrix, square.matrix)
    with pytest.raises(ValueError, match=r"missing \['c'\], not in the graph \['d'\]"):
        square.reorder(["a", "b", "d"])
    with pytest.raises(ValueError, match=r"missing \['a'\]"):
        square.reorder(["b", "c"])


def test_prerequisites(square):
    assert square.prerequisites() == ("a", "b", "c")
    assert square.prerequisites(["a"]) == ("a", "c")
    assert square.prerequisites(["c"]) == ()  # b -> c is negative: not an edge
    with pytest.raises(ValueError, match="'q'"):
        square.prerequisites(["q"])


def test_density(square):
    # 2 positive entries (a->b, c->a) among the 6 between distinct skills.
    assert square.density() == pytest.approx(2 / 6)
    # Diagonal found by name, not position.
    assert square.reorder(["c", "a", "b"]).density() == pytest.approx(2 / 6)
    bipartite = SkillsGraph([[1.0, 0.0, -2.0], [0.5, 0.0, 3.0]], ["a", "b"], ["x", "y", "z"])
    assert bipartite.density() == pytest.approx(3 / 6)
    assert SkillsGraph([[1.0]], ["a"]).density() == 0.0


def test_save_load_json(tmp_path, square):
    path = square.save(tmp_path / "sub" / "graph.json")
    data = json.loads(path.read_text())
    assert data["train_skills"] == ["a", "b", "c"]
    assert data["metadata"] == {"seed": 3}
    assert not [p for p in path.parent.iterdir() if p.name != "graph.json"]  # no temporary left behind
    loaded = SkillsGraph.load(path)
    assert loaded.train_skills == square.train_skills and loaded.eval_skills == square.eval_skills
    np.testing.assert_array_equal(loaded.matrix, square.matrix)
    assert loaded.metadata == {"seed": 3}


def test_load_json_with_names_reorders(tmp_path):
    graph = SkillsGraph([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], ["a", "b", "c"], ["x", "y"])
    path = graph.save(tmp_path / "g.json")
    loaded = SkillsGraph.load(path, train_skills=["c", "a", "b"], eval_skills=["y", "x"])
    np.testing.assert_array_equal(loaded.matrix, [[6.0, 5.0], [2.0, 1.0], [4.0, 3.0]])
    with pytest.raises(ValueError, match=r"training skills differ.*not in the file \['d'\], only in the file \['c'\]"):
        SkillsGraph.load(path, train_skills=["a", "b", "d"])


def test_load_npy(tmp_path):
    path = tmp_path / "g.npy"
    np.save(path, np.array([[1.0, 0.0], [0.5, 1.0]]))
    graph = SkillsGraph.load(path, train_skills=["a", "b"])
    assert graph.eval_skills == ("a", "b")
    assert graph.matrix[1, 0] == 0.5
    with pytest.raises(ValueError, match="pass train_skills"):
        SkillsGraph.load(path)
    with pytest.raises(ValueError, match="shape"):
        SkillsGraph.load(path, train_skills=["a", "b", "c"])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        SkillsGraph.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        SkillsGraph.load(bad)
    keyless = tmp_path / "keyless.json"
    keyless.write_text(json.dumps({"train_skills": ["a"]}))
    with pytest.raises(ValueError, match="keyless.json.*'matrix'"):
        SkillsGraph.load(keyless)
    other = tmp_path / "g.csv"
    other.write_text("1")
    with pytest.raises(ValueError, match="'.csv'"):
        SkillsGraph.load(other)
    with pytest.raises(ValueError, match=r"\.json"):
        SkillsGraph.identity(["a"]).save(tmp_path / "g.npy")
