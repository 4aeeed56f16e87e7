"""The Slurm runtime: runs as batch jobs (a grid as one job array) on one Slurm cluster.

Every Slurm command and every file of the runs root goes through the login node's
:class:`~seglab.machines.base.MachineSync` (this machine, or a host over its SSH
connection, where the host's ``env_setup`` lines run before each Slurm command). A run's ``ref`` is
``JOBSPEC:RUN_DIR`` where JOBSPEC is ``JOBID`` or ``ARRAYJOBID_TASK``; the run directory
holds ``slurm.json`` (labels, job spec) so :meth:`SlurmRuntime.list` finds runs again
after the controller forgot the job, and ``train.log`` (the job's ``--output``).

The batch script ``exec``s the trainer, so the batch shell *is* the trainer: Slurm's
``--signal=B:TERM@SECS`` before the time limit, ``scancel --signal=TERM --full`` and a
requeue all deliver SIGTERM to it, and it checkpoints (``last.pt``) before it exits. A
requeued or resubmitted job in the same run dir resumes from ``last.pt``.

State comes from ``scontrol show job`` while the controller knows the job, then from
the cluster's job-completion log (``JobCompType=jobcomp/filetxt``) when it has one.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from seglab.hosts import SlurmOptions
from seglab.machines import CommandError, CommandResult, LocalMachine, LoopThread, MachineSync
from seglab.runtime.base import (
    LogCursor,
    LogLine,
    RunInfo,
    RuntimeState,
    matches,
    wait_for_exit,
)
from seglab.runtime.errors import (
    HostUnreachable,
    LaunchFailed,
    NameInUse,
    RunNotFound,
    RunStillRunning,
    RuntimeFailure,
    SpecError,
)
from seglab.runtime.jobfiles import JobFiles
from seglab.runtime.spec import LaunchSpec

RECORD_FILE = "slurm.json"
LOG_FILE = "train.log"
SUBMIT_DIR = ".slurm"  # under runs_root: one folder per submission (task -> run dir links)
COMMENT_PREFIX = "seglab:"
_POLL = 1.0
_COMMAND_TIMEOUT = 30.0
_COMMENT_MAX = 1000  # characters of run ids in a job's --comment

# Slurm job states -> the runtime-independent status (see RuntimeState).
_WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
_PAUSED = {"SUSPENDED", "STOPPED"}
_ENDED_WHY = {
    "TIMEOUT": "the job hit its Slurm time limit",
    "CANCELLED": "the job was cancelled (scancel)",
    "NODE_FAIL": "the node running the job failed",
    "BOOT_FAIL": "the node could not boot for the job",
    "DEADLINE": "the job missed its deadline",
    "PREEMPTED": "the job was preempted (and not requeued)",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "SPECIAL_EXIT": "the job was held after a special exit",
}


@dataclass(frozen=True)
class SlurmJob:
    """What the controller (or the job-completion log) says about one job."""

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    restarts: int = 0
    start: datetime | None = None
    end: datetime | None = None

    def runtime_state(self) -> RuntimeState:
        """The runtime-independent view; ``detail`` carries a pending job's reason."""
        base = self.state.split()[0].rstrip("+")
        started = self.start
        if base in _WAITING:
            why = self.reason if self.reason and self.reason != "None" else None
            detail = f"slurm {base.lower()}" + (f" ({why})" if why else "")
            return RuntimeState("created", detail=detail)
        if base in _RUNNING:
            return RuntimeState(
                "running",
                started_at=started,
                detail=f"slurm {base.lower()} (restarts {self.restarts})"
                if self.restarts
                else None,
            )
        if base in _PAUSED:
            return RuntimeState("paused", started_at=started, detail=f"slurm {base.lower()}")
        code = self.exit_code
        if self.signal:
            code = 128 + self.signal
        if base == "COMPLETED":
            return RuntimeState(
                "exited", exit_code=code or 0, started_at=started, finished_at=self.end
            )
        if base == "FAILED":
            return RuntimeState(
                "exited",
                exit_code=code or 1,
                started_at=started,
                finished_at=self.end,
                error=f"slurm job {self.job_id} failed "
                f"(exit {self.exit_code}, signal {self.signal})",
            )
        why = _ENDED_WHY.get(base, f"slurm state {base}")
        return RuntimeState(
            "exited",
            exit_code=code if code else 1,
            started_at=started,
            finished_at=self.end,
            oom_killed=base == "OUT_OF_MEMORY",
            error=f"slurm job {self.job_id}: {why}",
        )


def parse_fields(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol -o`` / jobcomp line (values may hold spaces
    only at the end, as Comment does; a key starts after a space)."""
    out: dict[str, str] = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z/:]+)=(\S*)", line):
        out[match.group(1)] = match.group(2)
    return out


def _time(text: str | None) -> datetime | None:
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone()  # Slurm prints local time
    except ValueError:
        return None  # a time field is informational: an odd format leaves it unknown


def job_from_fields(fields: Mapping[str, str]) -> SlurmJob:
    """A :class:`SlurmJob` from parsed ``scontrol -o show job`` or jobcomp fields."""
    code, _, sig = fields.get("ExitCode", "").partition(":")
    return SlurmJob(
        job_id=fields.get("JobId", "?"),
        state=fields.get("JobState", "UNKNOWN"),
        reason=fields.get("Reason"),
        exit_code=int(code) if code.isdigit() else None,
        signal=int(sig) if sig.isdigit() and int(sig) else None,
        restarts=int(fields.get("Restarts", "0") or 0),
        start=_time(fields.get("StartTime")),
        end=_time(fields.get("EndTime")),
    )


def jobspec_of(fields: Mapping[str, str]) -> str:
    """``ARRAYJOBID_TASK`` for an array task's record, else ``JOBID``."""
    array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
    return f"{array}_{task}" if array and task else fields.get("JobId", "?")


def expand_tasks(text: str) -> list[str]:
    """Task ids of an ``ArrayTaskId`` value such as ``3``, ``0-3%2`` or ``0,2-5:2``."""
    out: list[str] = []
    for part in text.partition("%")[0].split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        if not first.isdigit() or (last and not last.isdigit()) or (step and not step.isdigit()):
            raise RuntimeFailure(f"cannot read Slurm array task ids {text!r}")
        out += [str(i) for i in range(int(first), int(last or first) + 1, int(step or 1))]
    return out


def _forgotten(jobspec: str) -> RuntimeState:
    return RuntimeState(
        "dead",
        error=f"Slurm no longer knows job {jobspec}, and no "
        "job-completion log of the cluster records it",
    )


def split_ref(ref: str) -> tuple[str, Path]:
    """``JOBSPEC:RUN_DIR`` -> (job spec, run dir)."""
    jobspec, sep, run_dir = ref.partition(":")
    if not sep or not re.fullmatch(r"[0-9]+(_[0-9]+)?", jobspec) or not run_dir:
        raise SpecError(f"not a Slurm run reference: {ref!r} (expected JOBID[_TASK]:RUN_DIR)")
    return jobspec, Path(run_dir)


class SlurmRuntime:
    """Runs on one Slurm cluster; ``runs_root`` is a folder the cluster's nodes share.

    ``signal_before_limit``: seconds before the time limit at which Slurm sends SIGTERM
    (the trainer checkpoints, so a requeued or resumed job loses almost nothing).
    """

    kind = "slurm"

    def __init__(
        self,
        runs_root: Path,
        settings: SlurmOptions | None = None,
        machine: MachineSync | None = None,
        host: str = "slurm",
        signal_before_limit: int = 60,
    ) -> None:
        self.runs_root = Path(runs_root)
        self.settings = settings or SlurmOptions()
        self.signal_before_limit = signal_before_limit
        self.machine = machine or MachineSync(LocalMachine(host), LoopThread("seglab-slurm"))
        self.files = JobFiles(self.machine)
        self.host = host
        self._jobcomp: Path | None = None
        self._jobcomp_read = False

    # -- commands ---------------------------------------------------------------------

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        """A Slurm command on the login node (a remote one runs ``env_setup`` first: a
        non-interactive SSH session loads no login profile)."""
        command = list(argv)
        if self.settings.env_setup and not self.machine.is_local:
            setup = "\n".join(self.settings.env_setup)
            command = ["bash", "-c", setup + '\nexec "$@"', "bash", *command]
        try:
            return self.machine.run(command, stdin=stdin, timeout=_COMMAND_TIMEOUT)
        except CommandError as exc:
            if exc.not_found:
                raise RuntimeFailure(
                    f"{argv[0]} is not installed on {self.host} (is this a Slurm login "
                    "node? the Slurm client tools must be on PATH)"
                ) from exc
            raise HostUnreachable(str(exc)) from exc
        except TimeoutError as exc:
            raise RuntimeFailure(
                f"{argv[0]} did not answer within {_COMMAND_TIMEOUT:g} s on {self.host} "
                "(is slurmctld up?)"
            ) from exc

    def check(self) -> None:
        """Raise RuntimeFailure unless a controller answers (``scontrol ping``)."""
        result = self._run(["scontrol", "ping"])
        if result.returncode != 0 or "UP" not in result.stdout:
            raise RuntimeFailure(
                f"no Slurm controller answers on {self.host}: "
                f"{(result.stdout + result.stderr).strip()}"
            )

    # -- launching ----------------------------------------------------------------------

    def script(self, specs: Sequence[LaunchSpec], gpus: int = 0) -> str:
        """The batch script: environment, env_setup lines, then ``exec`` of the task's
        command (picked by ``SLURM_ARRAY_TASK_ID`` when there are several)."""
        settings = self.settings
        lines = [
            "#!/bin/bash",
            "# seglab batch script (one task per variant)",
            "export PYTHONUNBUFFERED=1",
        ]
        lines += list(settings.env_setup)
        commands = [self._command(spec, gpus) for spec in specs]
        if len(specs) == 1:
            lines.append(commands[0])
        else:
            lines.append('case "${SLURM_ARRAY_TASK_ID:?not an array task}" in')
            for index, command in enumerate(commands):
                lines.append(f"  {index}) {command} ;;")
            lines.append('  *) echo "seglab: no task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;')
            lines.append("esac")
        return "\n".join(lines) + "\n"

    def _command(self, spec: LaunchSpec, gpus: int) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(spec.env.items()))
        workdir = spec.workdir or str(self._run_dir(spec))
        argv = list(spec.command)
        image = self.settings.container
        if image:  # Apptainer/Singularity (exec'd too, so Slurm's signals reach it first)
            binds = ",".join(
                f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts
            )
            argv = [
                "apptainer",
                "exec",
                *(["--nv"] if gpus else []),
                *(["--bind", binds] if binds else []),
                "--pwd",
                workdir,
                image,
                *argv,
            ]
        return (
            f"cd {shlex.quote(workdir)} && exec {'env ' + env + ' ' if env else ''}"
            f"{shlex.join(argv)}"
        )

    @staticmethod
    def _run_dir(spec: LaunchSpec) -> Path:
        if spec.log_path is None:
            raise SpecError("the Slurm runtime needs log_path (train.log in the run dir)")
        return Path(spec.log_path).parent

    def sbatch_args(
        self, specs: Sequence[LaunchSpec], gpus: int, output: str, job_name: str
    ) -> list[str]:
        """The ``sbatch`` command line for ``specs`` (an array when there are several)."""
        settings = self.settings
        names = ",".join(s.name for s in specs)
        if len(names) > _COMMENT_MAX:  # a big grid: name the first run and count the rest
            names = f"{specs[0].name},+{len(specs) - 1} more"
        args = [
            "sbatch",
            "--parsable",
            f"--job-name={job_name}",
            f"--comment={COMMENT_PREFIX}{names}",
            f"--output={output}",
            f"--error={output}",
            "--open-mode=append",
            "--requeue",
            f"--signal=B:TERM@{self.signal_before_limit}",
            "--ntasks=1",
        ]
        if len(specs) > 1:
            args.append(f"--array=0-{len(specs) - 1}")
        if gpus:
            args.append(f"--gres={settings.gres}:{gpus}")
        if settings.partition:
            args.append(f"--partition={settings.partition}")
        if settings.account:
            args.append(f"--account={settings.account}")
        if settings.time_limit:
            args.append(f"--time={settings.time_limit}")
        cpus = max((s.cpus or 0 for s in specs), default=0)
        if cpus:
            args.append(f"--cpus-per-task={max(1, round(cpus))}")
        memory = next((s.memory for s in specs if s.memory), None)
        if memory:
            args.append(f"--mem={memory.upper()}")
        return args

    def submit(self, specs: Sequence[LaunchSpec], gpus: int = 0) -> list[str]:
        """Submit ``specs`` as one job (one spec) or one job array (a task per spec, in
        order); returns their refs. Each spec's run dir must exist."""
        if not specs:
            raise SpecError("nothing to submit")
        run_dirs = [self._run_dir(spec) for spec in specs]
        for spec, run_dir in zip(specs, run_dirs, strict=True):
            self._refuse_in_use(spec.name, run_dir)
        if len(specs) == 1:
            output = str(run_dirs[0] / LOG_FILE)
            job_name = specs[0].name
        else:
            # Slurm expands %a in --output: each task's link leads into its own run dir.
            folder = self.runs_root / SUBMIT_DIR / specs[0].name
            self.files.link_tasks(folder, run_dirs)
            output = str(folder / "%a" / LOG_FILE)
            job_name = specs[0].labels.get("seglab.recipe", specs[0].name) + ".grid"
        result = self._run(
            self.sbatch_args(specs, gpus, output, job_name), stdin=self.script(specs, gpus)
        )
        if result.returncode != 0:
            raise LaunchFailed(
                f"sbatch refused the job on {self.host}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise LaunchFailed(f"sbatch printed no job id: {result.stdout!r}")
        refs = []
        for index, (spec, run_dir) in enumerate(zip(specs, run_dirs, strict=True)):
            jobspec = job_id if len(specs) == 1 else f"{job_id}_{index}"
            record = {
                "name": spec.name,
                "jobspec": jobspec,
                "labels": dict(spec.labels),
                "command": list(spec.command),
                "gpus": gpus,
                "submitted_at": time.time(),
            }
            self.files.write_text(run_dir / RECORD_FILE, json.dumps(record) + "\n")
            refs.append(f"{jobspec}:{run_dir}")
        return refs

    def _refuse_in_use(self, name: str, run_dir: Path) -> None:
        """NameInUse when ``run_dir`` holds the record of a job that is still active (a
        run of that name is queued or going; an ended one may be submitted again)."""
        path = run_dir / RECORD_FILE
        if not self.files.exists(path):
            return
        try:
            jobspec = str(json.loads(self.files.read_text(path))["jobspec"])
        except (ValueError, KeyError):
            return  # a damaged record of an earlier job: the new one replaces it
        job = self.job(jobspec)
        if job is not None and job.runtime_state().active:
            raise NameInUse(name)

    def launch(self, spec: LaunchSpec, gpus: int | None = None) -> str:
        """Submit one run as one batch job (``gpus``: GRES count, default len(spec.gpus))."""
        return self.submit([spec], len(spec.gpus) if gpus is None else gpus)[0]

    # -- state ------------------------------------------------------------------------------

    def job(self, jobspec: str) -> SlurmJob | None:
        """The job as the controller knows it, else from the completion log, else None."""
        result = self._run(["scontrol", "-o", "show", "job", jobspec])
        if result.returncode == 0 and result.stdout.strip():
            return job_from_fields(parse_fields(result.stdout.splitlines()[0]))
        if "Invalid job id" not in result.stderr:
            raise RuntimeFailure(
                f"scontrol show job {jobspec} failed on {self.host}: {result.stderr.strip()}"
            )
        return self.completed(jobspec)

    def _completion_log(self) -> Path | None:
        if not self._jobcomp_read:
            result = self._run(["scontrol", "show", "config"])
            config = {
                k.strip(): v.strip()
                for k, _, v in (line.partition("=") for line in result.stdout.splitlines())
            }
            location = config.get("JobCompLoc", "")
            filetxt = config.get("JobCompType") == "jobcomp/filetxt"
            self._jobcomp = Path(location) if filetxt and location.startswith("/") else None
            self._jobcomp_read = result.returncode == 0
        return self._jobcomp

    def completed(self, jobspec: str) -> SlurmJob | None:
        """The job's last record in the cluster's job-completion log (None: no log, or
        the job is not in it)."""
        return self.completed_many([jobspec]).get(jobspec)

    def completed_many(self, jobspecs: Sequence[str]) -> dict[str, SlurmJob]:
        """:meth:`completed` for several jobs with one read of the log."""
        path = self._completion_log()
        if path is None or not jobspecs:
            return {}
        ids = sorted({spec.partition("_")[0] for spec in jobspecs})
        patterns = [arg for job_id in ids for arg in ("-e", f"={job_id} ")]
        result = self._run(["grep", "-F", *patterns, "--", str(path)])
        wanted = set(jobspecs)
        found: dict[str, SlurmJob] = {}
        for line in result.stdout.splitlines():  # later lines (after a requeue) win
            spec = jobspec_of(parse_fields(line))
            if spec in wanted:
                found[spec] = job_from_fields(parse_fields(line))
        return found

    def snapshot(self) -> dict[str, SlurmJob]:
        """Every job the controller knows, by job spec, from one ``scontrol`` call."""
        result = self._run(["scontrol", "-o", "show", "job"])
        if result.returncode != 0:
            raise RuntimeFailure(
                f"scontrol show job failed on {self.host}: {result.stderr.strip()}"
            )
        jobs: dict[str, SlurmJob] = {}
        for line in result.stdout.splitlines():
            if not line.startswith("JobId="):
                continue  # "No jobs in the system"
            fields = parse_fields(line)
            job = job_from_fields(fields)
            array = fields.get("ArrayJobId")
            if array and fields.get("ArrayTaskId"):
                for task in expand_tasks(fields["ArrayTaskId"]):
                    jobs[f"{array}_{task}"] = job
            else:
                jobs[fields.get("JobId", "?")] = job
        return jobs

    def _record(self, run_dir: Path) -> dict[str, Any]:
        path = run_dir / RECORD_FILE
        try:
            record: dict[str, Any] = json.loads(self.files.read_text(path))
        except FileNotFoundError as exc:
            raise RunNotFound(str(run_dir)) from exc
        except ValueError as exc:
            raise RuntimeFailure(f"{path} is damaged ({exc}); remove it to forget the run") from exc
        return record

    def requested_gpus(self, ref: str) -> int:
        """The GRES count the run was submitted with (what a resubmission asks again)."""
        _, run_dir = split_ref(ref)
        return int(self._record(run_dir).get("gpus", 0))

    def inspect(self, ref: str) -> RuntimeState:
        """The job's state; ``dead`` once neither Slurm nor its completion log knows it."""
        jobspec, run_dir = split_ref(ref)
        self._record(run_dir)
        job = self.job(jobspec)
        return job.runtime_state() if job is not None else _forgotten(jobspec)

    def list(self, labels: Mapping[str, str | None] | None = None) -> list[RunInfo]:
        """Runs under ``runs_root`` (their ``slurm.json``) whose labels match; their states
        come from one ``scontrol`` call and one read of the completion log, however many
        runs there are."""
        found: list[tuple[str, str, str, dict[str, str]]] = []
        for run_dir, text in self.files.records(self.runs_root, RECORD_FILE):
            try:
                record: dict[str, Any] = json.loads(text)
            except ValueError:
                continue  # a damaged record: inspect() of that run says so
            record_labels = {str(k): str(v) for k, v in record.get("labels", {}).items()}
            if matches(record_labels, labels):
                jobspec = str(record["jobspec"])
                found.append((jobspec, f"{jobspec}:{run_dir}", str(record["name"]), record_labels))
        if not found:
            return []
        known = self.snapshot()
        known.update(self.completed_many([spec for spec, *_ in found if spec not in known]))
        out = []
        for jobspec, ref, name, record_labels in found:
            job = known.get(jobspec)
            state = job.runtime_state() if job is not None else _forgotten(jobspec)
            out.append(RunInfo(ref, name, record_labels, state))
        return out

    # -- logs ---------------------------------------------------------------------------

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        since: LogCursor | datetime | None = None,
        tail: int | None = None,
    ) -> Iterator[LogLine]:
        """Whole lines of the job's output file (train.log); ``follow`` until it ends."""
        if isinstance(since, datetime):
            raise SpecError("a Slurm output file has no timestamps: resume from a LogCursor")
        _, run_dir = split_ref(ref)
        self._record(run_dir)
        path = run_dir / LOG_FILE
        while not self.files.exists(path):
            if not follow or not self.inspect(ref).active:
                return
            time.sleep(_POLL)  # pending: Slurm creates the file when the job starts
        yield from self.files.lines(
            path, lambda: self.inspect(ref).active, follow=follow, since=since, tail=tail
        )

    # -- ending ---------------------------------------------------------------------------

    def _scancel(self, jobspec: str, *args: str) -> None:
        result = self._run(["scancel", *args, jobspec])
        if result.returncode != 0 and "already completing or completed" not in result.stderr:
            raise RuntimeFailure(
                f"scancel {' '.join(args)} {jobspec} failed on {self.host}: {result.stderr.strip()}"
            )

    def _wait_ended(self, ref: str, timeout: float) -> RuntimeState:
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect(ref)
            if not state.active or time.monotonic() >= deadline:
                return state
            time.sleep(_POLL)

    def _signal(self, ref: str, name: str) -> str | None:
        """Send SIG``name`` to every process of an active job (a pending one is cancelled);
        its jobspec, or None when the job has already ended."""
        jobspec, _ = split_ref(ref)
        state = self.inspect(ref)
        if not state.active:
            return None
        if state.status == "created":
            self._scancel(jobspec)
        else:
            self._scancel(jobspec, f"--signal={name}", "--full")
        return jobspec

    def stop(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM to the job (the trainer checkpoints and exits), ``timeout`` s of grace,
        then ``scancel``. A pending job is cancelled at once."""
        jobspec = self._signal(ref, "TERM")
        if jobspec is None:
            return
        if self._wait_ended(ref, timeout).active:
            self._scancel(jobspec)
            self._wait_ended(ref, 60.0)

    def kill(self, ref: str) -> None:
        """SIGKILL to every process of the job; returns once Slurm records its end."""
        jobspec = self._signal(ref, "KILL")
        if jobspec is None:
            return
        if self._wait_ended(ref, 30.0).active:
            raise RuntimeFailure(f"Slurm job {jobspec} survived SIGKILL for 30 s")

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """The exit code once the job ends; TimeoutError after ``timeout`` seconds."""
        return wait_for_exit(self.inspect, ref, timeout, _POLL, "Slurm job")

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget the run (its slurm.json); the run dir and Slurm's own records stay."""
        _, run_dir = split_ref(ref)
        if self.inspect(ref).active:
            if not force:
                raise RunStillRunning(ref)
            self.kill(ref)
        self.files.unlink(run_dir / RECORD_FILE)
