"""Typed runtime failures, each with a message that says what is wrong and what to do."""

from __future__ import annotations

from seglab.errors import UnavailableError


class RuntimeFailure(UnavailableError):
    """Base of every runtime error; ``str(exc)`` is a message for the user."""


class SpecError(RuntimeFailure):
    """A LaunchSpec that no runtime may launch (bad name, user, size, GPU id, mount)."""


class UnsafeMount(SpecError):
    """A mount that would hand the container control of the host (the Docker socket)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"refusing to mount {path}: {reason}")
        self.path = path


class EngineUnavailable(RuntimeFailure):
    """No Docker engine answers on the socket."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"no Docker engine answers at {where} ({reason}); start dockerd, point "
            "DOCKER_HOST at its socket, or use --runtime process"
        )
        self.where = where


class HostUnreachable(RuntimeFailure):
    """The host that runs the runtime's commands (a Slurm login node over SSH) cannot be
    reached now; its runs are not lost, only not visible."""


class ImageMissing(RuntimeFailure):
    """The image is not on the engine (seglab never pulls implicitly)."""

    def __init__(self, image: str, host: str) -> None:
        super().__init__(
            f"image {image} is not on host {host}; build it there with "
            f"`seglab image build ...` or `docker load` it (seglab does not pull)"
        )
        self.image = image
        self.host = host


class NvidiaRuntimeMissing(RuntimeFailure):
    """GPUs were asked for but the engine cannot hand GPUs to containers."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(
            f"host {host} cannot give GPUs to containers: the NVIDIA container toolkit is "
            f"not installed or not configured for dockerd ({detail}); install "
            "nvidia-container-toolkit there, or run CPU-only with --on HOST:cpu"
        )
        self.host = host


class UnknownGpu(RuntimeFailure):
    """The host's NVIDIA runtime does not know a GPU the run was pinned to."""

    def __init__(self, host: str, gpus: tuple[str, ...], detail: str) -> None:
        super().__init__(
            f"host {host} has no GPU {', '.join(gpus)} as far as its NVIDIA runtime knows "
            f"({detail}); list the host's GPUs with `seglab gpus --host {host}`"
        )
        self.host = host
        self.gpus = gpus


class NameInUse(RuntimeFailure):
    """A container or process run with this name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"a run named {name} already exists on this runtime; remove it first "
            "(seglab rm) or pick another run id"
        )
        self.name = name


class RunNotFound(RuntimeFailure):
    """No container / process run with this reference exists (any more)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no run {ref} on this runtime (removed outside seglab?)")
        self.ref = ref


class RunStillRunning(RuntimeFailure):
    """An operation that needs a stopped run was asked of a running one."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"run {ref} is still running; stop it first (or force)")
        self.ref = ref


class RunLost(RuntimeFailure):
    """The run's process is gone without an exit code (killed with its wrapper, reboot)."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"run {ref} ended without recording an exit code (its wrapper was killed or "
            "the machine rebooted)"
        )
        self.ref = ref


class LaunchFailed(RuntimeFailure):
    """The engine or the OS refused to start the run; nothing was left behind."""
