"""`seglab image build` without an engine: the build context and the CLI's refusals."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from seglab.runtime.images import context_tar


def test_the_context_holds_the_package_not_the_checkout_clutter(repo_root: Path) -> None:
    with tarfile.open(fileobj=context_tar(repo_root)) as tar:
        names = tar.getnames()
    assert "pyproject.toml" in names and "images/base/Dockerfile" in names
    assert "seglab/runtime/docker.py" in names
    assert not [n for n in names if n.startswith((".venv", ".git", "tests"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_cli_refuses_remote_hosts_and_bad_build_args() -> None:
    def seglab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seglab", "image", "build", *args],
                              check=False, capture_output=True, text=True, timeout=60)

    remote = seglab("base", "--host", "lab1")
    assert remote.returncode == 1 and "not available yet" in remote.stderr
    bad = seglab("base", "--build-arg", "NOVALUE")
    assert bad.returncode == 1 and "expected KEY=VALUE" in bad.stderr
    unknown = seglab("huge")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
