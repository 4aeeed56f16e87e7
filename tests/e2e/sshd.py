"""A real OpenSSH server on loopback for the SSH tests, and an isolated client home.

:class:`SshServer` runs ``sshd -D -f CONFIG`` on 127.0.0.1 at a free port with a host key
and an ``AuthorizedKeysFile`` of its own (keys made by ssh-keygen for each test session),
``StrictModes no`` and no password or keyboard-interactive login. The fixtures point HOME
and the XDG variables at a temporary home whose ``~/.ssh`` holds the user key, a config
with ``Host`` entries for the server and an (initially empty) known_hosts; the real
``~/.ssh`` is never read or written. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
STANDIN = REPO / "tests" / "standin" / "nvidia-smi"


def sshd_missing_reason() -> str | None:
    """Why the SSH tests cannot run here, or None when they can."""
    if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)):
        return "OpenSSH sshd is not installed (.ci/sshd.sh installs it)"
    if not (os.path.isfile(SSH_KEYGEN) and os.access(SSH_KEYGEN, os.X_OK)):
        return "ssh-keygen is not installed (.ci/sshd.sh installs it)"
    return None


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair at `path` (and `path`.pub), without a passphrase."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def fingerprint(public_key: Path) -> str:
    """The SHA256 fingerprint ssh-keygen prints for a public key file."""
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SshServer:
    """One `sshd -D` on 127.0.0.1; restartable on the same port, with a new host key if asked."""

    def __init__(self, workdir: Path, user_public_key: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.dir / "authorized_keys"
        shutil.copyfile(user_public_key, self.authorized_keys)
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None
        keygen(self.host_key, "seglab-test-host")

    @property
    def host_fingerprint(self) -> str:
        """SHA256 fingerprint of the host key the server presents."""
        return fingerprint(self.host_key.with_suffix(".pub"))

    def write_config(self) -> None:
        """The sshd_config: loopback only, key auth only, this test's files only."""
        sftp = SFTP_SERVER if os.path.exists(SFTP_SERVER) else "internal-sftp"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "AllowStreamLocalForwarding yes",
                    "AllowTcpForwarding yes",
                    "MaxSessions 100",
                    "MaxStartups 100",
                    f"Subsystem sftp {sftp}",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def start(self) -> None:
        """Start sshd and wait until it accepts connections."""
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.write_config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start-up:\n{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port}:\n{self.log.read_text()}")

    def sessions(self) -> list[psutil.Process]:
        """The per-connection sshd processes (descendants of the listening sshd)."""
        if self.process is None or self.process.poll() is not None:
            return []
        return psutil.Process(self.process.pid).children(recursive=True)

    def kill_sessions(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to every per-connection sshd process; how many there were."""
        sessions = self.sessions()
        for proc in sessions:
            signal_process(proc, sig)
        return len(sessions)

    def break_link(self) -> int:
        """Stop accepting, then kill every session process; how many sessions there were."""
        sessions = self.sessions()
        self.stop_listening()
        for proc in sessions:
            signal_process(proc, signal.SIGKILL)
        return len(sessions)

    def stop_listening(self) -> None:
        """Stop the listening sshd (sessions already open keep running)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self, new_host_key: bool = False) -> None:
        """Stop sshd, optionally replace its host key, and start it on the same port."""
        self.stop_listening()
        if new_host_key:
            self.host_key.unlink()
            self.host_key.with_suffix(".pub").unlink()
            keygen(self.host_key, "seglab-test-host-new")
        self.start()

    def close(self) -> None:
        """Stop the listener and every session it started."""
        sessions = self.sessions()
        self.stop_listening()
        for proc in sessions:
            signal_process(proc, signal.SIGKILL)


def signal_process(proc: psutil.Process, sig: int) -> None:
    """Signal `proc` unless it has already gone (killing a parent often ends its children)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


@dataclass(frozen=True)
class SshHome:
    """The isolated client side: HOME, its ~/.ssh, and the user key the server accepts."""

    home: Path
    ssh_dir: Path
    user_key: Path

    @property
    def known_hosts(self) -> Path:
        """~/.ssh/known_hosts of the test home."""
        return self.ssh_dir / "known_hosts"

    @property
    def config(self) -> Path:
        """~/.ssh/config of the test home."""
        return self.ssh_dir / "config"

    def add_host(self, alias: str, server: SshServer) -> None:
        """Append a `Host alias` entry reaching `server` to ~/.ssh/config."""
        with self.config.open("a") as out:
            out.write(
                f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n"
                f"  User {server.user}\n  IdentityFile {self.user_key}\n\n"
            )

    def trust(self, server: SshServer) -> None:
        """Add the server's current host key to known_hosts (as ssh-keyscan would)."""
        key = server.host_key.with_suffix(".pub").read_text().split()
        with self.known_hosts.open("a") as out:
            out.write(f"[127.0.0.1]:{server.port} {key[0]} {key[1]}\n")


def write_hosts_yaml(config_home: Path, entries: dict[str, dict[str, str]]) -> Path:
    """hosts.yaml under $XDG_CONFIG_HOME/seglab with `entries` (simple string values)."""
    lines = ["hosts:"]
    for name, settings in entries.items():
        lines.append(f"  {name}:")
        lines.extend(f"    {key}: {value}" for key, value in settings.items())
    path = config_home / "seglab" / "hosts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def standin_wrapper(directory: Path, gpus: int = 1, name: str = "nvidia-smi") -> Path:
    """An nvidia-smi for the "remote" host: the stand-in with its settings baked in."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    path = directory / name
    path.write_text(
        "#!/bin/sh\n"
        f"SEGLAB_STANDIN_GPUS={gpus} SEGLAB_STANDIN_PYTHON={python} "
        f'exec {STANDIN} "$@"\n'
    )
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's user key pair (private key path; the public key is beside it)."""
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    return keygen(tmp_path_factory.mktemp("ssh-keys") / "id_ed25519", "seglab-test-user")


@pytest.fixture
def ssh_home(
    isolated_xdg: Path, ssh_keys: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SshHome]:
    """HOME (and XDG) in a temporary folder, with ~/.ssh holding only the test's files."""
    home = isolated_xdg
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    user_key = ssh_dir / "id_ed25519"
    shutil.copyfile(ssh_keys, user_key)
    user_key.chmod(0o600)
    shutil.copyfile(ssh_keys.with_suffix(".pub"), user_key.with_suffix(".pub"))
    (ssh_dir / "config").write_text("")
    (ssh_dir / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SEGLAB_SSH_CONFIG", raising=False)
    # Forward sockets need a short path (108 bytes at most for a UNIX socket).
    runtime = Path(tempfile.mkdtemp(prefix="sl-rt-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        yield SshHome(home, ssh_dir, user_key)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def sshd(ssh_home: SshHome, tmp_path: Path) -> Iterator[SshServer]:
    """A running sshd reachable as the ~/.ssh/config alias `lab1` (host key not yet trusted)."""
    server = SshServer(tmp_path / "sshd", ssh_home.user_key.with_suffix(".pub"))
    server.start()
    ssh_home.add_host("lab1", server)
    try:
        yield server
    finally:
        server.close()


@dataclass(frozen=True)
class Lab:
    """A trusted remote host `lab1` in hosts.yaml, served by `server`."""

    server: SshServer
    home: SshHome
    hosts_yaml: Path
    nvidia_smi: Path


@pytest.fixture
def lab1(sshd: SshServer, ssh_home: SshHome, isolated_xdg: Path, tmp_path: Path) -> Lab:
    """hosts.yaml with `lab1` (the ~/.ssh/config alias of `sshd`), its host key trusted,
    and the stand-in nvidia-smi (2 GPUs) as its `nvidia_smi`."""
    ssh_home.trust(sshd)
    bin_dir = tmp_path / "remote-bin"
    bin_dir.mkdir()
    smi = standin_wrapper(bin_dir, gpus=2)
    hosts_yaml = write_hosts_yaml(
        isolated_xdg / "config",
        {"lab1": {"ssh": "lab1", "nvidia_smi": str(smi), "runs_root": str(tmp_path / "runs")}},
    )
    return Lab(sshd, ssh_home, hosts_yaml, smi)


@dataclass(frozen=True)
class SecondEngine:
    """A second, independent dockerd playing a remote server's engine."""

    socket: Path
    data_root: Path


@pytest.fixture(scope="session")
def remote_engine() -> Iterator[SecondEngine]:
    """Start `dockerd` on a socket, data root and exec root of its own (root only)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("dockerd is not installed (.ci/docker.sh installs docker.io)")
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    work = Path(tempfile.mkdtemp(prefix="sl-dk-"))  # short: containerd sockets live here
    data = work / "data"
    data.mkdir()
    # On tmpfs the engine's layers vanish at once afterwards (deleting them from disk took
    # 20 s on the 2-core CI machine); without mount rights they stay on disk.
    on_tmpfs = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2g,mode=0700", "tmpfs", str(data)],
            check=False,
            capture_output=True,
        ).returncode
        == 0
    )
    sock = work / "remote.sock"
    log_path = work / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                dockerd,
                "--host",
                f"unix://{sock}",
                "--data-root",
                str(data),
                "--exec-root",
                str(work / "exec"),
                "--pidfile",
                str(work / "dockerd.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_for_engine(sock, process, log_path)
        yield SecondEngine(sock, data)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # dockerd and its containerd
            process.wait(10)
        if on_tmpfs:
            subprocess.run(["umount", "--lazy", str(data)], check=True)
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_engine(sock: Path, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import docker
    from docker.errors import DockerException

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the second dockerd exited:\n{log_path.read_text()[-3000:]}")
        if sock.exists():
            client = docker.DockerClient(base_url=f"unix://{sock}", timeout=5)
            try:
                client.ping()
                return
            except (DockerException, OSError):
                time.sleep(0.2)
            finally:
                client.close()
        else:
            time.sleep(0.2)
    pytest.fail(f"the second dockerd did not answer within 60 s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def remote_ci_image(docker_client: Any, ci_image: str, remote_engine: SecondEngine) -> str:
    """The CI image, copied from the local engine into the second one (no registry)."""
    import docker

    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}", timeout=300)
    try:
        remote.images.load(docker_client.images.get(ci_image).save(chunk_size=1 << 20, named=True))
    finally:
        remote.close()
    return ci_image
