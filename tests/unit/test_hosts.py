"""The host inventory: hosts.yaml schema, ~/.ssh/config resolution, errors, `seglab hosts`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.errors import SeglabError
from seglab.hosts import (
    DEFAULT_REMOTE_RUNS_ROOT,
    SSHTarget,
    UnknownDatasetError,
    UnknownHostError,
    load_inventory,
)
from seglab.workstation import Workstation
from seglab.yamlpos import ConfigError


@pytest.fixture(autouse=True)
def ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ssh client config of the test's own (the user's ~/.ssh/config never leaks in)."""
    path = tmp_path / "ssh" / "config"
    path.parent.mkdir()
    path.write_text("")
    monkeypatch.setenv("SEGLAB_SSH_CONFIG", str(path))
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    return [str(p) for p in info.value.problems]


# -- loading ---------------------------------------------------------------------------------


def test_no_hosts_file_means_just_the_local_host(isolated_xdg: Path) -> None:
    inventory = load_inventory()
    assert list(inventory.hosts) == ["local"]
    assert inventory.path == isolated_xdg / "config" / "seglab" / "hosts.yaml"
    local = inventory.get("local")
    assert local.is_local and local.ssh is None and local.kind == "docker"
    assert local.runs_root == isolated_xdg / "data" / "seglab" / "runs"
    assert (local.docker_socket, local.nvidia_smi, local.telemetry) == (
        "/var/run/docker.sock",
        "nvidia-smi",
        "auto",
    )
    assert (local.telemetry_interval, local.gpu_memory_threshold_mib) == (1.0, 256)


def test_the_design_example_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          local:
            telemetry: nvml
            datasets: {cityscapes: /srv/cityscapes}
          lab1:
            ssh: alice@gpu1.example.org:22
            docker_socket: /var/run/docker.sock
            nvidia_smi: /usr/bin/nvidia-smi
            runs_root: /data/seglab/runs
            datasets: {cityscapes: /data/cityscapes, ade20k: /data/ADEChallengeData2016}
            telemetry_interval: 0.5
            gpu_memory_threshold_mib: 1024
          lab2:
            ssh: gpu2.example.org
    """,
    )
    inventory = load_inventory(path)
    assert list(inventory.hosts) == ["local", "lab1", "lab2"]
    lab1 = inventory.get("lab1")
    assert lab1.ssh == SSHTarget(user="alice", hostname="gpu1.example.org", port=22)
    assert not lab1.is_local
    assert lab1.runs_root == "/data/seglab/runs"
    assert lab1.dataset_root("ade20k") == "/data/ADEChallengeData2016"
    assert (lab1.telemetry_interval, lab1.gpu_memory_threshold_mib) == (0.5, 1024)
    lab2 = inventory.get("lab2")
    assert lab2.ssh == SSHTarget(user=None, hostname="gpu2.example.org", port=22)
    assert lab2.runs_root == DEFAULT_REMOTE_RUNS_ROOT
    local = inventory.get("local")
    assert local.telemetry == "nvml" and local.dataset_root("cityscapes") == "/srv/cityscapes"


def test_empty_file_and_empty_hosts_mapping_mean_local_only(tmp_path: Path) -> None:
    assert list(load_inventory(_write(tmp_path / "a.yaml", ""))) == [
        load_inventory(tmp_path / "missing.yaml").get("local")
    ]
    assert list(load_inventory(_write(tmp_path / "b.yaml", "hosts:\n")).hosts) == ["local"]


def test_local_paths_expand_the_home_dir(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          local: {runs_root: ~/runs, datasets: {voc: ~/data/voc}, nvidia_smi: ~/bin/smi}
    """,
    )
    local = load_inventory(path).get("local")
    assert local.runs_root == Path.home() / "runs"
    assert local.dataset_root("voc") == str(Path.home() / "data" / "voc")
    assert local.nvidia_smi == str(Path.home() / "bin" / "smi")


def test_a_slurm_host_without_ssh_runs_on_this_machine(tmp_path: Path, isolated_xdg: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          cluster: {kind: slurm}
          remote-cluster: {kind: slurm, ssh: login.example.org}
    """,
    )
    inventory = load_inventory(path)
    cluster = inventory.get("cluster")
    assert cluster.kind == "slurm" and cluster.is_local
    assert cluster.runs_root == isolated_xdg / "data" / "seglab" / "runs"
    assert not inventory.get("remote-cluster").is_local


# -- ssh targets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice@gpu1:2222", SSHTarget(user="alice", hostname="gpu1", port=2222)),
        ("gpu1.example.org", SSHTarget(user=None, hostname="gpu1.example.org", port=22)),
        ("10.0.0.7:2200", SSHTarget(user=None, hostname="10.0.0.7", port=2200)),
        ("bob@[fe80::1]:2201", SSHTarget(user="bob", hostname="fe80::1", port=2201)),
        ("[::1]", SSHTarget(user=None, hostname="::1", port=22)),
    ],
)
def test_ssh_target_forms(tmp_path: Path, value: str, expected: SSHTarget) -> None:
    path = _write(tmp_path / "hosts.yaml", f"hosts:\n  box:\n    ssh: '{value}'\n")
    assert load_inventory(path).get("box").ssh == expected


def test_ssh_target_shows_as_user_host_port() -> None:
    assert str(SSHTarget(user="a", hostname="h", port=2222)) == "a@h:2222"
    assert str(SSHTarget(user=None, hostname="h")) == "h"
    assert str(SSHTarget(user="a", hostname="::1", port=2)) == "a@[::1]:2"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice@gpu1:0", "port must be a number from 1 to 65535, got '0'"),
        ("alice@gpu1:ssh", "port must be a number from 1 to 65535, got 'ssh'"),
        ("al ice@gpu1", "'al ice' is not a valid user name in 'al ice@gpu1'"),
        (
            "gpu 1",
            "expected user@host[:port], host[:port] or an alias from ~/.ssh/config, got 'gpu 1'",
        ),
        ("fe80::1", "write an IPv6 address in brackets, e.g. [fe80::1]:22; got 'fe80::1'"),
        ("[gpu1]:22", "brackets are for IPv6 addresses, got '[gpu1]:22'"),
        ("", "expected user@host[:port] or an alias from ~/.ssh/config, got ''"),
    ],
)
def test_bad_ssh_targets_are_located(tmp_path: Path, value: str, message: str) -> None:
    path = _write(tmp_path / "hosts.yaml", f"hosts:\n  box:\n    ssh: '{value}'\n")
    assert _errors(path) == [f"{path}:3: hosts.box.ssh: {message}"]


def test_an_alias_resolves_through_the_ssh_config(tmp_path: Path, ssh_config: Path) -> None:
    _write(
        ssh_config,
        """
        # the first value obtained for a setting wins, as in ssh(1)
        Host gpu-box other
            HostName %h.lab.example.org
            User alice
            Port 2222
            IdentityFile ~/.ssh/id_%r_%h
            IdentityFile /keys/shared
            ProxyJump bastion.example.org
        Host gpu-*
            User ignored
            Port 1
        Host *
            IdentityFile /keys/all
    """,
    )
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          box: {ssh: gpu-box}
          box-as-bob: {ssh: 'bob@gpu-box:2200'}
    """,
    )
    inventory = load_inventory(path)
    box = inventory.get("box").ssh
    assert box == SSHTarget(
        user="alice",
        hostname="gpu-box.lab.example.org",
        port=2222,
        alias="gpu-box",
        identity_files=(
            str(Path.home() / ".ssh" / "id_alice_gpu-box.lab.example.org"),
            "/keys/shared",
            "/keys/all",
        ),
        proxy_jump="bastion.example.org",
    )
    bob = inventory.get("box-as-bob").ssh
    assert bob is not None and (bob.user, bob.port, bob.hostname) == (
        "bob",
        2200,
        "gpu-box.lab.example.org",
    )


def test_wildcards_negation_include_and_match_blocks(tmp_path: Path, ssh_config: Path) -> None:
    _write(
        ssh_config.parent / "conf.d" / "lab.conf",
        """
        Host lab-*
            User labuser
    """,
    )
    _write(
        ssh_config,
        f"""
        Include {ssh_config.parent}/conf.d/*.conf
        Match exec "false"
            User from-exec
        Match originalhost plainhost
            User from-match
        Host lab-* !lab-public
            HostName %h.internal
            ProxyJump none
        Host lab-public
            Port=2022
    """,
    )
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          a: {ssh: lab-7}
          b: {ssh: lab-public}
          c: {ssh: plainhost}
          d: {ssh: otherhost}
    """,
    )
    inventory = load_inventory(path)
    assert inventory.get("a").ssh == SSHTarget(
        user="labuser", hostname="lab-7.internal", alias="lab-7"
    )
    assert inventory.get("b").ssh == SSHTarget(
        user="labuser", hostname="lab-public", port=2022, alias="lab-public"
    )
    # `Match` blocks are evaluated as asyncssh evaluates them when it connects.
    assert inventory.get("c").ssh == SSHTarget(user="from-match", hostname="plainhost")
    assert inventory.get("d").ssh == SSHTarget(user=None, hostname="otherhost")


def test_a_relative_include_is_under_the_ssh_folder_as_for_asyncssh(
    tmp_path: Path, ssh_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    _write(home / ".ssh" / "conf.d" / "lab.conf", "Host lab-*\n    User from-home\n")
    _write(ssh_config.parent / "conf.d" / "lab.conf", "Host lab-*\n    User beside-config\n")
    _write(ssh_config, "Include conf.d/*.conf\n")
    monkeypatch.setenv("HOME", str(home))
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  a: {ssh: lab-1}\n")
    ssh = load_inventory(path).get("a").ssh
    assert ssh is not None and ssh.user == "from-home"


def test_a_bad_port_in_the_ssh_config_is_located_there(tmp_path: Path, ssh_config: Path) -> None:
    _write(ssh_config, "Host box\n    Port twenty-two\n")
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  box: {ssh: box}\n")
    assert _errors(path) == [
        f"{ssh_config}:2: hosts.box.ssh: ssh config: Invalid Port integer value: twenty-two"
    ]
    _write(ssh_config, "Host box\n    Port 70000\n")
    assert _errors(path) == [
        f"{path}:2: hosts.box.ssh: ssh config Port 70000 is not from 1 to 65535"
    ]


# -- errors ----------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          local:
            ssh: me@localhost
            telemtry: auto
          lab1:
            ssh: alice@gpu1
            kind: kubernetes
            partition: gpu
            telemetry: nvml
            telemetry_interval: 0
            gpu_memory_threshold_mib: -1
            docker_socket: var/run/docker.sock
            runs_root: runs
            datasets:
              cityscapes: data/cityscapes
              ade20k: ~/ade
              ok: /data/ok
          lab2:
            nvidia_smi: bin/nvidia-smi
          "bad name!": {ssh: h}
          lab3: [1, 2]
        host: 1
    """,
    )
    assert _errors(path) == [
        f"{path}:3: hosts.local.ssh: the local host is this machine and takes no ssh target; "
        "add the remote machine under another name",
        f"{path}:4: hosts.local.telemtry: unknown key (did you mean 'telemetry'?)",
        f"{path}:7: hosts.lab1.kind: expected one of docker, slurm, got 'kubernetes'",
        f"{path}:8: hosts.lab1.partition: only a `kind: slurm` host takes this key",
        f"{path}:9: hosts.lab1.telemetry: nvml reads this machine's GPUs only; a remote host "
        "uses nvidia-smi (or auto)",
        f"{path}:10: hosts.lab1.telemetry_interval: must be a number of seconds greater than 0, "
        "got 0",
        f"{path}:11: hosts.lab1.gpu_memory_threshold_mib: must be 0 or more MiB, got -1",
        f"{path}:12: hosts.lab1.docker_socket: expected the absolute path of the Docker "
        "socket, got 'var/run/docker.sock'",
        f"{path}:13: hosts.lab1.runs_root: expected an absolute path (or one under ~/) on the "
        "remote host, got 'runs'",
        f"{path}:15: hosts.lab1.datasets.cityscapes: expected an absolute path, "
        "got 'data/cityscapes'",
        f"{path}:16: hosts.lab1.datasets.ade20k: expected an absolute path, got '~/ade' "
        "(Docker mounts need absolute paths; `~` is not expanded on remote hosts)",
        f"{path}:18: hosts.lab2.ssh: required key is missing: give user@host[:port] or an "
        "alias from ~/.ssh/config (only a `kind: slurm` host may omit it, meaning its login "
        "node is this machine)",
        f"{path}:19: hosts.lab2.nvidia_smi: expected a command name on PATH or an absolute "
        "path, got 'bin/nvidia-smi'",
        f"{path}:20: hosts.bad name!: a host name is letters, digits, '_', '.' and '-', "
        "starting with a letter or digit",
        f"{path}:21: hosts.lab3: expected a mapping of host settings, got [1, 2]",
        f"{path}:22: host: unknown key (did you mean 'hosts'?)",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("telemetry_interval: fast", "expected a number of seconds, got 'fast'"),
        ("telemetry_interval: true", "expected a number of seconds, got True"),
        ("gpu_memory_threshold_mib: 1.5", "expected a whole number of MiB, got 1.5"),
        ("telemetry: dcgm", "expected one of auto, nvml, nvidia-smi, got 'dcgm'"),
        ("datasets: [a, b]", "expected a mapping of dataset name -> absolute path, got ['a', 'b']"),
        ("runs_root: 42", "expected a non-empty string, got 42"),
        ("kind: 3", "expected one of docker, slurm, got 3"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "hosts.yaml", f"hosts:\n  local:\n    {line}\n")
    key = line.partition(":")[0]
    assert _errors(path) == [f"{path}:3: hosts.local.{key}: {message}"]


def test_misspelled_slurm_keys_are_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  c:\n    kind: slurm\n    acount: x\n")
    assert _errors(path) == [f"{path}:4: hosts.c.acount: unknown key (did you mean 'account'?)"]
    path = _write(tmp_path / "h2.yaml", "hosts:\n  c:\n    kind: slurm\n    telemetri: auto\n")
    assert _errors(path) == [
        f"{path}:4: hosts.c.telemetri: unknown key (did you mean 'telemetry'?)"
    ]


def test_slurm_keys_configure_job_submission(tmp_path: Path, isolated_xdg: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          cluster:
            kind: slurm
            partition: gpu-a100
            account: vision
            time_limit: "2-00:00:00"
            container: /shared/images/seglab.sif
            env_setup: [module load cuda/12.4, source /opt/venv/bin/activate]
            python: /opt/venv/bin/python
            gres: gpu
          plain: {kind: slurm, time_limit: 90, env_setup: source ~/venv/bin/activate}
    """,
    )
    inventory = load_inventory(path)
    slurm = inventory.get("cluster").slurm
    assert slurm is not None
    assert (slurm.partition, slurm.account, slurm.time_limit) == (
        "gpu-a100",
        "vision",
        "2-00:00:00",
    )
    assert slurm.container == "/shared/images/seglab.sif"
    assert slurm.env_setup == ("module load cuda/12.4", "source /opt/venv/bin/activate")
    assert slurm.python == "/opt/venv/bin/python"
    plain = inventory.get("plain").slurm
    assert plain is not None
    assert plain.time_limit == "90" and plain.env_setup == ("source ~/venv/bin/activate",)
    assert (plain.partition, plain.account, plain.container) == (None, None, None)
    assert (plain.python, plain.gres) == ("python3", "gpu")
    assert inventory.get("local").slurm is None


def test_cli_json_shows_slurm_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          cluster: {kind: slurm, partition: gpu, env_setup: module load cuda}
    """,
    )
    assert main(["hosts", "--file", str(path), "--json"]) == 0
    hosts = {h["name"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
    assert hosts["local"]["slurm"] is None
    assert hosts["cluster"]["kind"] == "slurm" and hosts["cluster"]["local"] is True
    assert hosts["cluster"]["slurm"] == {
        "partition": "gpu",
        "account": None,
        "time_limit": None,
        "container": None,
        "env_setup": ["module load cuda"],
        "python": "python3",
        "gres": "gpu",
    }


def test_bad_slurm_values_name_file_line_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          lab1:
            ssh: gpu1
            partition: gpu
          cluster:
            kind: slurm
            partition: "gpu a100"
            time_limit: soon
            env_setup: [ok, ""]
            python: venv/bin/python
            account: 7
    """,
    )
    assert _errors(path) == [
        f"{path}:4: hosts.lab1.partition: only a `kind: slurm` host takes this key",
        f"{path}:7: hosts.cluster.partition: expected a Slurm name (letters, digits, '_', "
        "'.', '+', '-'), got 'gpu a100'",
        f"{path}:8: hosts.cluster.time_limit: expected a Slurm time limit such as 90 "
        "(minutes), 4:00:00 or 2-00:00:00, got 'soon'",
        f"{path}:9: hosts.cluster.env_setup[1]: expected one non-empty shell line, got ''",
        f"{path}:10: hosts.cluster.python: expected a command name on PATH or an absolute "
        "path, got 'venv/bin/python'",
        f"{path}:11: hosts.cluster.account: expected a non-empty string, got 7",
    ]


def test_yaml_syntax_errors_are_located(tmp_path: Path) -> None:
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  lab1: {ssh: a@b\n")
    (error,) = _errors(path)
    assert error.startswith(f"{path}:3: (syntax): ")


def test_unknown_host_names_the_known_ones_and_a_close_match(tmp_path: Path) -> None:
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  lab1: {ssh: gpu1}\n")
    inventory = load_inventory(path)
    with pytest.raises(SeglabError) as info:
        inventory.get("lab2")
    assert isinstance(info.value, UnknownHostError)
    assert str(info.value) == "unknown host 'lab2' (did you mean 'lab1'?); known hosts: local, lab1"


def test_a_missing_dataset_root_says_where_to_add_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  lab1: {ssh: g, datasets: {voc: /v}}\n")
    with pytest.raises(UnknownDatasetError) as info:
        load_inventory(path).get("lab1").dataset_root("cityscapes")
    assert str(info.value) == (
        "host 'lab1' has no root for dataset 'cityscapes'; add it to hosts.yaml as "
        "`hosts: {lab1: {datasets: {cityscapes: /absolute/path}}}` "
        "(datasets configured there: voc)"
    )


# -- the workstation and the CLI -------------------------------------------------------------


def test_the_workstation_reads_hosts_yaml_from_its_config_dir(tmp_path: Path) -> None:
    _write(tmp_path / "cfg" / "hosts.yaml", "hosts:\n  lab1: {ssh: gpu1}\n")
    assert list(Workstation(config_dir=tmp_path / "cfg").hosts().hosts) == ["local", "lab1"]


def test_cli_json_lists_the_inventory(
    isolated_xdg: Path, ssh_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(ssh_config, "Host box\n  HostName gpu1.example.org\n  User alice\n")
    path = _write(
        isolated_xdg / "config" / "seglab" / "hosts.yaml",
        """
        hosts:
          lab1: {ssh: box, datasets: {voc: /data/voc}, telemetry_interval: 2}
    """,
    )
    assert main(["hosts", "--json", "--no-check"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["file"] == str(path) and out["file_exists"] is True
    assert [h["name"] for h in out["hosts"]] == ["local", "lab1"]
    lab1 = out["hosts"][1]
    assert lab1 == {
        "name": "lab1",
        "kind": "docker",
        "local": False,
        "ssh": {
            "target": "alice@gpu1.example.org",
            "user": "alice",
            "hostname": "gpu1.example.org",
            "port": 22,
            "alias": "box",
            "identity_files": [],
            "proxy_jump": None,
        },
        "docker_socket": "/var/run/docker.sock",
        "docker_url": None,
        "docker_url_from_env": False,
        "runs_root": "~/seglab/runs",
        "datasets": {"voc": "/data/voc"},
        "telemetry": "auto",
        "telemetry_interval": 2.0,
        "nvidia_smi": "nvidia-smi",
        "gpu_memory_threshold_mib": 256,
        "node_address": None,
        "node_interface": None,
        "slurm": None,
        "checked": False,
    }
    assert out["hosts"][0]["ssh"] is None and out["hosts"][0]["local"] is True


def test_cli_text_without_a_hosts_file(
    isolated_xdg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hosts"]) == 0
    out = capsys.readouterr().out
    assert "only the local host" in out
    assert f"runs root      {isolated_xdg / 'data' / 'seglab' / 'runs'}" in out
    assert "local  [docker]  this machine" in out


def test_cli_text_shows_remote_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  lab1: {ssh: 'a@g:2200'}\n")
    assert main(["hosts", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"2 host(s) from {path}" in out
    assert "lab1  [docker]  ssh a@g:2200" in out


def test_cli_reports_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          lab1: {ssh: 'a@g:0', telemetry: x}
          lab2: {}
    """,
    )
    assert main(["hosts", "--file", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}:2: hosts.lab1.ssh: port must be a number from 1 to 65535, got '0'",
        f"{path}:2: hosts.lab1.telemetry: expected one of auto, nvml, nvidia-smi, got 'x'",
        f"{path}:3: hosts.lab2.ssh: required key is missing: give user@host[:port] or an "
        "alias from ~/.ssh/config (only a `kind: slurm` host may omit it, meaning its login "
        "node is this machine)",
    ]


def test_cli_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["hosts", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "hosts.yaml" in out and "--json" in out and "FILE:LINE" in out


def test_the_example_in_the_docs_loads(repo_root: Path, tmp_path: Path) -> None:
    doc = (repo_root / "docs" / "hosts.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    inventory = load_inventory(_write(tmp_path / "hosts.yaml", example))
    assert list(inventory.hosts) == ["local", "lab1", "lab2", "cluster"]
    assert inventory.get("lab1").dataset_root("ade20k") == "/data/ADEChallengeData2016"
    assert inventory.get("cluster").is_local


def test_cli_checks_each_host_status(
    isolated_xdg: Path,
    ssh_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{isolated_xdg / 'no-engine.sock'}")
    _write(
        isolated_xdg / "config" / "seglab" / "hosts.yaml",
        f"""
        hosts:
          local: {{nvidia_smi: /nonexistent/nvidia-smi}}
          lab1: {{ssh: "127.0.0.1:{port}"}}
    """,
    )
    assert main(["hosts", "--json", "--timeout", "5"]) == 0
    hosts = {h["name"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
    local, lab1 = hosts["local"], hosts["lab1"]
    assert local["checked"] is True and local["status"]["state"] == "online"
    assert local["status"]["gpu_count"] is None and local["status"]["docker_version"] is None
    assert any("/nonexistent/nvidia-smi" in p for p in local["status"]["problems"])
    engine = f"unix://{isolated_xdg / 'no-engine.sock'}"
    assert (local["docker_url"], local["docker_url_from_env"]) == (engine, True)
    assert f"no Docker engine: nothing at {engine} (" in local["status"]["problems"][-1]
    assert lab1["checked"] is True
    assert lab1["status"]["state"] in ("offline", "connecting")
    assert lab1["status"]["message"]


def test_cli_text_names_the_engine_from_docker_host_and_why_it_is_down(
    isolated_xdg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    dead = isolated_xdg / "dead.sock"
    with socket.socket(socket.AF_UNIX) as listener:  # a socket file nobody listens on
        listener.bind(str(dead))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{dead}")
    _write(
        isolated_xdg / "config" / "seglab" / "hosts.yaml",
        "hosts:\n  local: {nvidia_smi: /nonexistent/nvidia-smi}\n",
    )
    assert main(["hosts"]) == 0
    out = capsys.readouterr().out
    assert f"  docker engine  unix://{dead} (from DOCKER_HOST)\n" in out
    assert "/var/run/docker.sock" not in out
    assert (
        f"  - no Docker engine: nothing accepts connections at unix://{dead} "
        "(dockerd is not running)\n" in out
    )
    assert "Error while fetching" not in out and "ConnectionRefusedError" not in out

    monkeypatch.setenv("DOCKER_HOST", f"unix://{isolated_xdg / 'missing.sock'}")
    assert main(["hosts"]) == 0
    out = capsys.readouterr().out
    assert f"nothing at unix://{isolated_xdg / 'missing.sock'} (the Docker daemon" in out
    assert "FileNotFoundError" not in out

    monkeypatch.delenv("DOCKER_HOST")
    assert main(["hosts", "--no-check"]) == 0
    assert "  docker engine  unix:///var/run/docker.sock\n" in capsys.readouterr().out


def test_multi_node_addresses_and_interfaces(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hosts.yaml",
        """
        hosts:
          local:
            node_address: 10.0.0.9
          lab1:
            ssh: alice@gpu1
            node_address: gpu1.cluster.internal
            node_interface: ib0
          lab2:
            ssh: gpu2
            node_address: not an address
            node_interface: "eth0; rm -rf /"
    """,
    )
    assert _errors(path) == [
        f"{path}:10: hosts.lab2.node_address: expected the host name or IP address other "
        "hosts reach this one at (for multi-node runs), got 'not an address'",
        f"{path}:11: hosts.lab2.node_interface: expected a network interface name such as "
        "eth0 or ib0, got 'eth0; rm -rf /'",
    ]
    path.write_text(path.read_text().split("  lab2:")[0])
    inventory = load_inventory(path)
    assert inventory.get("local").node_address == "10.0.0.9"
    lab1 = inventory.get("lab1")
    assert (lab1.node_address, lab1.node_interface) == ("gpu1.cluster.internal", "ib0")


def test_asyncssh_is_imported_only_for_a_remote_entry(tmp_path: Path, ssh_config: Path) -> None:
    _write(ssh_config, "Host box\n    HostName gpu1.example.org\n")
    local = _write(tmp_path / "local.yaml", "hosts:\n  local: {}\n  cluster: {kind: slurm}\n")
    remote = _write(tmp_path / "remote.yaml", "hosts:\n  lab1: {ssh: box}\n")
    probe = (
        "import sys; from seglab.hosts import load_inventory; "
        "inventory = load_inventory(__import__('pathlib').Path(sys.argv[1])); "
        "print(sorted(inventory.hosts), 'asyncssh' in sys.modules)"
    )

    def imported(path: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert imported(local) == "['cluster', 'local'] False"
    assert imported(remote) == "['lab1', 'local'] True"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- lab1\n", "1: (top level): expected a mapping with a `hosts:` key"),
        ("hosts: [lab1]\n", "1: hosts: expected a mapping of host name -> settings"),
        (
            "hosts:\n  lab1:\n",
            "2: hosts.lab1.ssh: required key is missing: give user@host[:port] or an alias "
            "from ~/.ssh/config (only a `kind: slurm` host may omit it, meaning its login "
            "node is this machine)",
        ),
        (
            "hosts:\n  local:\n    datasets:\n      'a b': /x\n",
            "4: hosts.local.datasets.a b: a dataset name is letters, digits, '_', '.' and '-'",
        ),
        (
            "hosts:\n  c:\n    kind: slurm\n    partition:\n",
            "4: hosts.c.partition: expected a non-empty string, got None",
        ),
    ],
)
def test_structure_errors_are_located(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "hosts.yaml", text)
    assert _errors(path) == [f"{path}:{message}"]


def test_a_bad_token_in_the_ssh_config_is_reported_with_the_file(
    tmp_path: Path, ssh_config: Path
) -> None:
    _write(ssh_config, "Host box\n    HostName %z.example.org\n")
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  box: {ssh: box}\n")
    # asyncssh names no line for a bad token: the file's first line stands for it
    assert _errors(path) == [
        f"{ssh_config}:1: hosts.box.ssh: ssh config: Invalid token expansion: z"
    ]


def test_match_final_applies_after_the_host_name_is_resolved(
    tmp_path: Path, ssh_config: Path
) -> None:
    _write(
        ssh_config,
        """
        Host lab-*
            HostName %h.internal
        Match final host *.internal
            User final-user
    """,
    )
    path = _write(tmp_path / "hosts.yaml", "hosts:\n  a: {ssh: lab-1}\n  b: {ssh: other}\n")
    inventory = load_inventory(path)
    assert inventory.get("a").ssh == SSHTarget(
        user="final-user", hostname="lab-1.internal", alias="lab-1"
    )
    assert inventory.get("b").ssh == SSHTarget(user=None, hostname="other")
