"""The Makefile's choice of torch build, checked with `pip install --dry-run` against local indexes.

Each test builds two one-wheel package indexes on disk: a "CPU index" holding `torch-2.13.0+cpu` and a
"registry" holding plain `torch-2.13.0` (standing for the registry's default, a CUDA build on Linux). pip runs
with every configuration file disabled (this machine's pip config has a local folder of CPU wheels that would
answer whatever the Makefile asked for), so the wheel pip picks is the Makefile's choice alone, and every URL is
a local file: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _wheel(folder: Path, version: str) -> Path:
    """A minimal pure-Python wheel named torch, enough for pip to resolve it."""
    folder.mkdir(parents=True)
    path = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    files = {
        "torch/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _index(root: Path, version: str) -> str:
    """A PEP 503 simple index at `root` serving one torch wheel; returns its file:// URL."""
    wheel = _wheel(root / "files", version)
    page = root / "simple" / "torch"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(f'<html><body><a href="{wheel.as_uri()}">{wheel.name}</a></body></html>')
    return (root / "simple").as_uri()


def _fake_nvidia_smi(folder: Path, gpu: bool) -> Path:
    folder.mkdir()
    script = folder / "nvidia-smi"
    body = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"' if gpu else "echo 'NVIDIA-SMI has failed' >&2; exit 9"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return folder


def _closed_port_url() -> str:
    # A port nothing listens on: connections are refused at once.
    return f"http://127.0.0.1:{free_port()}/simple"


def _make_torch(tmp_path: Path, gpu: bool, cpu_index: str, *make_vars: str) -> tuple[dict, str, float]:
    """Run `make torch` as a dry run; return pip's report of what it would install, make's output and the time."""
    registry = _index(tmp_path / "registry", "2.13.0")
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PATH": f"{_fake_nvidia_smi(tmp_path / 'bin', gpu)}{os.pathsep}{os.environ['PATH']}",
        "PIP_CONFIG_FILE": os.devnull,  # no pip.conf: the Makefile's flags alone decide
        "PIP_INDEX_URL": registry,  # the "registry default" for this test
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "GPU", "TORCH_INDEX", "MAKEFLAGS"):
        env.pop(name, None)
    flags = f"--dry-run --ignore-installed --no-deps --report {report}"
    argv = ["make", "--no-print-directory", "-C", str(ROOT), "torch", f"PY={sys.executable}"]
    argv += [f"TORCH_PIP_FLAGS={flags}", f"TORCH_CPU_INDEX={cpu_index}", *make_vars]
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(report.read_text()), done.stdout + done.stderr, elapsed


def _chosen(report: dict) -> tuple[str, str]:
    [item] = report["install"]
    return item["metadata"]["version"], item["download_info"]["url"]


def _assert_installs(report: dict, version: str, index: Path) -> None:
    """pip would install torch `version` from the package index in the folder `index`."""
    chosen, url = _chosen(report)
    assert chosen == version
    assert url.startswith(index.as_uri())


def test_no_gpu_installs_the_cpu_build_from_the_cpu_index(tmp_path):
    cpu_index = _index(tmp_path / "cpu", "2.13.0+cpu")
    report, output, _ = _make_torch(tmp_path, False, cpu_index)
    _assert_installs(report, "2.13.0+cpu", tmp_path / "cpu")
    assert "no GPU found" in output


def test_unreachable_cpu_index_falls_back_to_the_registry_within_seconds(tmp_path):
    report, output, elapsed = _make_torch(tmp_path, False, _closed_port_url())
    _assert_installs(report, "2.13.0", tmp_path / "registry")
    assert "installing the registry's default torch==2.13.0 instead" in output
    # --timeout 5 --retries 0: without them pip would retry the dead index 5 times with back-off.
    assert elapsed < 30


def test_gpu_installs_the_registry_default(tmp_path):
    cpu_index = _index(tmp_path / "cpu", "2.13.0+cpu")
    report, output, _ = _make_torch(tmp_path, True, cpu_index)
    _assert_installs(report, "2.13.0", tmp_path / "registry")
    assert "GPU found (GPU 0: NVIDIA H100" in output


@pytest.mark.parametrize("gpu", [False, True])
def test_torch_index_override_wins(tmp_path, gpu):
    chosen = _index(tmp_path / "chosen", "2.13.0+cu126")
    report, _, _ = _make_torch(tmp_path, gpu, _closed_port_url(), f"TORCH_INDEX={chosen}")
    _assert_installs(report, "2.13.0+cu126", tmp_path / "chosen")


def test_empty_torch_index_means_the_registry_default_without_a_gpu(tmp_path):
    cpu_index = _index(tmp_path / "cpu", "2.13.0+cpu")
    report, output, _ = _make_torch(tmp_path, False, cpu_index, "TORCH_INDEX=")
    assert _chosen(report)[0] == "2.13.0"
    assert "TORCH_INDEX is empty" in output
