"""The CI recipes of docs/ci.md, run: every `bridge` command of its GitHub Actions and GitLab jobs on a small model,
and its Makefile (a verified model skipped the second time, a broken one failing the target)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "ci.md"
pytestmark = pytest.mark.slow


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def _shell(github: dict[str, Any], gitlab: dict[str, Any]) -> list[str]:
    """The GitHub step that runs bridge, and the GitLab script without its setup line: shell scripts to run."""
    step = next(s["run"] for s in github["jobs"]["verify"]["steps"] if "bridge verify" in s.get("run", ""))
    script = "\n".join(line for line in gitlab["verify-model"]["script"] if ".ci/setup" not in line)
    return [step, script]


@pytest.fixture()
def project(tmp_path: Path, zoo_model: Callable[[str], Path]) -> Path:
    """A model repository: models/classifier.pt2 (the zoo's mlp)."""
    (tmp_path / "models").mkdir()
    shutil.copy(zoo_model("mlp"), tmp_path / "models" / "classifier.pt2")
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.heavy  # 34 s; the Makefile recipe below runs the same bridge commands in the default run
def test_the_github_and_gitlab_jobs_run_and_write_their_reports(project: Path) -> None:
    documents = [yaml.safe_load(block) for block in _blocks("yaml")]
    github = next(d for d in documents if "jobs" in d)
    gitlab = next(d for d in documents if "verify-model" in d)
    assert gitlab["verify-model"]["artifacts"]["reports"]["junit"] == "reports/classifier.xml"
    for script in _shell(github, gitlab):
        result = subprocess.run(["bash", "-euc", script], cwd=project, env=_env(), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, script + "\n" + result.stderr[-2000:]
        assert "<testsuite" in (project / "reports" / "classifier.xml").read_text()
        assert ">passed<" in (project / "reports" / "classifier.html").read_text()
        shutil.rmtree(project / "reports")
        shutil.rmtree(project / "build")  # each job starts from a fresh checkout


def test_the_makefile_verifies_changed_models_and_fails_on_a_broken_one(project: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (project / "Makefile").write_text(_blocks("make")[0], encoding="utf-8")
    first = subprocess.run(["make", "verify"], cwd=project, env=_env(), capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (project / "reports" / "classifier.xml").is_file() and (project / "reports" / "classifier.html").is_file()
    again = subprocess.run(["make", "verify"], cwd=project, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "bridge verify" not in again.stdout  # nothing changed: nothing run
    (project / "models" / "broken.pt2").write_bytes(b"not a model")
    broken = subprocess.run(["make", "verify"], cwd=project, env=_env(), capture_output=True, text=True, timeout=900)
    assert broken.returncode != 0 and "broken.pt2" in broken.stderr
    hook = yaml.safe_load(_blocks("yaml")[-1])["repos"][0]["hooks"][0]
    assert hook["entry"] == "make verify" and re.match(hook["files"], "models/classifier.pt2")
