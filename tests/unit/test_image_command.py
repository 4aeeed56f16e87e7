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


def test_cli_names_unknown_unreachable_and_unsuitable_hosts_and_bad_args(
    isolated_xdg: Path,
) -> None:
    def seglab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "seglab", "image", "build", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )

    unknown_host = seglab("base", "--host", "lab2")
    assert unknown_host.returncode == 1
    assert "unknown host 'lab2'" in unknown_host.stderr and "known hosts: local" in (
        unknown_host.stderr
    )
    # A remote host whose SSH port refuses connections (nothing listens on port 1).
    (isolated_xdg / "config" / "seglab").mkdir(parents=True)
    (isolated_xdg / "config" / "seglab" / "hosts.yaml").write_text(
        "hosts:\n  lab1:\n    ssh: nobody@127.0.0.1:1\n"
    )
    unreachable = seglab("base", "--host", "lab1")
    assert unreachable.returncode == 1 and "host lab1 is" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    remote_ci = seglab("ci", "--host", "lab1")
    assert remote_ci.returncode == 1 and "built on this machine" in remote_ci.stderr
    bad = seglab("base", "--build-arg", "NOVALUE")
    assert bad.returncode == 1 and "expected KEY=VALUE" in bad.stderr
    unknown = seglab("huge")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
