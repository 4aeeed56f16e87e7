"""The Slurm runtime's pure parts: batch script (run for real by bash), sbatch arguments,
Slurm state mapping on lines captured from the CI cluster, refs, and the CLI's errors for
placements a Slurm host cannot take."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.hosts import SlurmOptions
from seglab.runtime.errors import RuntimeFailure, SpecError
from seglab.runtime.slurm import (
    SlurmJob,
    SlurmRuntime,
    expand_tasks,
    job_from_fields,
    jobspec_of,
    parse_fields,
    split_ref,
)
from seglab.runtime.spec import LaunchSpec, Mount
from tests.e2e.runlib import RECIPES

# Captured from the CI cluster (.ci/slurm.sh): `scontrol -o show job 11_1` and the jobcomp
# line of a cancelled array task (Comment ends with a space, as scontrol prints it).
SCONTROL_RUNNING = (
    "JobId=11 ArrayJobId=11 ArrayTaskId=1 JobName=wrap UserId=root(0) GroupId=root(0) "
    "MCS_label=N/A Priority=4294901753 Nice=0 Account=(null) QOS=(null) JobState=RUNNING "
    "Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 "
    "RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-27T05:40:13 "
    "EligibleTime=2026-11-27T05:40:14 AccrueTime=2026-11-27T05:40:14 "
    "StartTime=2026-11-27T05:40:14 EndTime=Unknown Deadline=N/A SuspendTime=None "
    "SecsPreSuspend=0 LastSchedEval=2026-11-27T05:40:14 Scheduler=Main Partition=ci "
    "AllocNode:Sid=localhost:19595 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm "
    "BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* "
    "MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 "
    "OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) "
    "WorkDir=/work/main Comment=seglab:a,b  StdErr=/dev/null StdIn=/dev/null "
    "StdOut=/dev/null Power= "
)
JOBCOMP_CANCELLED = (
    "JobId=12 UserId=root(0) GroupId=root(0) Name=wrap JobState=CANCELLED Partition=ci "
    "TimeLimit=UNLIMITED StartTime=2026-11-27T05:40:14 EndTime=2026-11-27T05:40:14 "
    "NodeList=vm NodeCnt=1 ProcCnt=1 WorkDir=/work/main ReservationName= "
    "Tres=cpu=1,mem=4000M,node=1,billing=1 Account= QOS= WcKey= Cluster=unknown "
    "SubmitTime=2026-11-27T05:40:13 EligibleTime=2026-11-27T05:40:14 ArrayJobId=11 "
    "ArrayTaskId=0 DerivedExitCode=0:0 ExitCode=0:0 "
)


def _spec(run_dir: Path, name: str, command: tuple[str, ...]) -> LaunchSpec:
    return LaunchSpec(
        name=name,
        image="none",
        command=command,
        log_path=run_dir / "train.log",
        workdir=str(run_dir),
        env={"SEGLAB_DATA_ROOT": "/data/with space"},
        labels={"seglab.recipe": "tiny-grid"},
    )


def test_the_batch_script_runs_the_task_of_its_array_index(tmp_path: Path) -> None:
    runtime = SlurmRuntime(tmp_path, SlurmOptions(env_setup=("export SETUP_RAN=yes",)))
    dirs = [tmp_path / "a", tmp_path / "b"]
    for path in dirs:
        path.mkdir()
    probe = ("sh", "-c", 'echo "$(pwd) $SETUP_RAN $SEGLAB_DATA_ROOT $0"', "it's quoted")
    script = runtime.script([_spec(d, d.name, probe) for d in dirs])
    for index, path in enumerate(dirs):
        out = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "SLURM_ARRAY_TASK_ID": str(index)},
        )
        assert out.stdout == f"{path} yes /data/with space it's quoted\n"
    wrong = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "7"},
    )
    assert wrong.returncode == 2 and "no task 7" in wrong.stderr


def test_an_apptainer_image_wraps_the_trainer(tmp_path: Path) -> None:
    runtime = SlurmRuntime(tmp_path, SlurmOptions(container="/images/seglab.sif"))
    run_dir = tmp_path / "r1"
    spec = LaunchSpec(
        name="r1",
        image="none",
        command=("python3", "-m", "seglab.train"),
        log_path=run_dir / "train.log",
        workdir=str(run_dir),
        mounts=(Mount(run_dir, str(run_dir), read_only=False), Mount(Path("/data/cs"), "/data/cs")),
    )
    command = runtime.script([spec], gpus=1).splitlines()[-1]
    assert command == (
        f"cd {run_dir} && exec apptainer exec --nv --bind "
        f"{run_dir}:{run_dir}:rw,/data/cs:/data/cs:ro --pwd {run_dir} "
        "/images/seglab.sif python3 -m seglab.train"
    )
    assert "--nv" not in runtime.script([spec], gpus=0)


def test_sbatch_arguments_follow_the_host_settings(tmp_path: Path) -> None:
    options = SlurmOptions(partition="gpu", account="vision", time_limit="4:00:00", gres="a100")
    runtime = SlurmRuntime(tmp_path, options, signal_before_limit=120)
    specs = [_spec(tmp_path / n, n, ("true",)) for n in ("r1", "r2", "r3")]
    args = runtime.sbatch_args(specs, 2, "/runs/.slurm/r1/%a/train.log", "tiny-grid.grid")
    assert args[0] == "sbatch"
    for expected in (
        "--array=0-2",
        "--gres=a100:2",
        "--partition=gpu",
        "--account=vision",
        "--time=4:00:00",
        "--requeue",
        "--signal=B:TERM@120",
        "--comment=seglab:r1,r2,r3",
        "--job-name=tiny-grid.grid",
        "--output=/runs/.slurm/r1/%a/train.log",
        "--open-mode=append",
    ):
        assert expected in args
    many = [
        _spec(tmp_path / f"run{i:03d}", f"tiny-grid.lr-{i:03d}.abcdef", ("true",))
        for i in range(100)
    ]
    big = SlurmRuntime(tmp_path).sbatch_args(many, 0, "/x/%a/train.log", "tiny-grid.grid")
    assert "--comment=seglab:tiny-grid.lr-000.abcdef,+99 more" in big
    single = SlurmRuntime(tmp_path).sbatch_args(specs[:1], 0, "/x/train.log", "r1")
    assert not [
        a
        for a in single
        if a.startswith(("--array", "--gres", "--partition", "--account", "--time"))
    ]


def test_scontrol_and_jobcomp_lines_parse() -> None:
    fields = parse_fields(SCONTROL_RUNNING)
    assert fields["JobState"] == "RUNNING" and fields["ArrayTaskId"] == "1"
    assert fields["Comment"] == "seglab:a,b" and fields["StdOut"] == "/dev/null"
    state = job_from_fields(fields).runtime_state()
    assert state.status == "running" and state.active and state.detail is None
    assert state.started_at is not None and state.started_at.minute == 40
    ended = job_from_fields(parse_fields(JOBCOMP_CANCELLED))
    assert (ended.job_id, ended.state, ended.exit_code, ended.signal) == (
        "12",
        "CANCELLED",
        0,
        None,
    )
    state = ended.runtime_state()
    assert state.status == "exited" and state.exit_code == 1
    assert state.error == "slurm job 12: the job was cancelled (scancel)"


@pytest.mark.parametrize(
    ("job", "status", "exit_code", "detail_or_error"),
    [
        (
            SlurmJob("1", "PENDING", reason="Resources"),
            "created",
            None,
            "slurm pending (Resources)",
        ),
        (SlurmJob("1", "PENDING", reason="None"), "created", None, "slurm pending"),
        (SlurmJob("1", "REQUEUED"), "created", None, "slurm requeued"),
        (SlurmJob("1", "RUNNING", restarts=2), "running", None, "slurm running (restarts 2)"),
        (SlurmJob("1", "SUSPENDED"), "paused", None, "slurm suspended"),
        (SlurmJob("1", "COMPLETED", exit_code=0), "exited", 0, None),
        (
            SlurmJob("1", "FAILED", exit_code=3),
            "exited",
            3,
            "slurm job 1 failed (exit 3, signal None)",
        ),
        (
            SlurmJob("1", "TIMEOUT", exit_code=0, signal=15),
            "exited",
            143,
            "slurm job 1: the job hit its Slurm time limit",
        ),
        (
            SlurmJob("1", "OUT_OF_MEMORY", exit_code=0, signal=9),
            "exited",
            137,
            "slurm job 1: the job ran out of memory",
        ),
        (
            SlurmJob("1", "CANCELLED by 0"),
            "exited",
            1,
            "slurm job 1: the job was cancelled (scancel)",
        ),
    ],
)
def test_slurm_states_map_to_runtime_states(
    job: SlurmJob, status: str, exit_code: int | None, detail_or_error: str | None
) -> None:
    state = job.runtime_state()
    assert state.status == status and state.exit_code == exit_code
    assert (state.detail if state.active else state.error) == detail_or_error
    assert state.oom_killed == (job.state == "OUT_OF_MEMORY")


def test_array_task_ids_expand_as_scontrol_prints_them() -> None:
    # Forms seen from `scontrol -o show job` on the CI cluster: a pending array record and
    # one with a task split out of it; plus a stepped range.
    assert expand_tasks("0-3%2") == ["0", "1", "2", "3"]
    assert expand_tasks("0,2-3%2") == ["0", "2", "3"]
    assert expand_tasks("7") == ["7"]
    assert expand_tasks("0-6:3") == ["0", "3", "6"]
    with pytest.raises(RuntimeFailure, match="cannot read Slurm array task ids"):
        expand_tasks("a-b")
    assert jobspec_of(parse_fields(SCONTROL_RUNNING)) == "11_1"
    assert jobspec_of(parse_fields(JOBCOMP_CANCELLED)) == "11_0"
    assert jobspec_of({"JobId": "5"}) == "5"


def test_refs_name_the_job_and_the_run_dir() -> None:
    assert split_ref("41_3:/runs/a:b") == ("41_3", Path("/runs/a:b"))
    assert split_ref("41:/runs/x") == ("41", Path("/runs/x"))
    for bad in ("/runs/x", "abc:/runs/x", "41_:/x", "41:"):
        with pytest.raises(SpecError, match="not a Slurm run reference"):
            split_ref(bad)


def test_slurm_hosts_refuse_gpu_lists_and_other_runtimes(
    isolated_xdg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        textwrap.dedent("""
        hosts:
          cluster: {kind: slurm}
    """)
    )
    recipe = str(RECIPES / "tiny-grid.yaml")
    assert main(["run", recipe, "--on", "cluster:0,1"]) != 0
    assert (
        "a Slurm host is placed whole (--on CLUSTER, or CLUSTER:cpu for no GPUs)"
        in capsys.readouterr().err
    )
    assert main(["run", recipe, "--on", "cluster", "--runtime", "docker"]) != 0
    assert "--runtime docker does not fit host cluster" in capsys.readouterr().err
    assert main(["run", recipe, "--on", "local:cpu", "--runtime", "slurm"]) != 0
    assert "--runtime slurm does not fit host local" in capsys.readouterr().err
