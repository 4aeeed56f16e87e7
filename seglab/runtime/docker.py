"""The docker runtime: one container per run on a Docker engine reached by socket.

Containers get seglab's defaults (docs/architecture.md, "Container defaults"): the run's
uid:gid, ``cap_drop=ALL``, ``no-new-privileges``, no network unless asked, an init process,
the recipe's shm size and pids limit, GPUs pinned by UUID through a ``DeviceRequest``,
never privileged and never the Docker socket. Calls block; async callers run them in
threads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount
from urllib3.exceptions import ProtocolError

from seglab.kinds import RuntimeKind
from seglab.runtime import images
from seglab.runtime.base import LogCursor, LogLine, RunInfo, RuntimeState, matches
from seglab.runtime.dockerstate import (
    EPOCH,
    datetime_from_ns,
    parse_timestamp_ns,
    state_from_attrs,
)
from seglab.runtime.errors import (
    EngineUnavailable,
    ImageMissing,
    LaunchFailed,
    NameInUse,
    NvidiaRuntimeMissing,
    RunNotFound,
    RunStillRunning,
    RuntimeFailure,
    SpecError,
    UnknownGpu,
)
from seglab.runtime.spec import CONTAINER_PREFIX, LaunchSpec, Mount, parse_mounts
from seglab.safetext import MAX_LINE_BYTES, cut_marker, whole_chars

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEV_MOUNTS_ENV = "SEGLAB_DEV_MOUNTS"
IMAGE_MOUNTS_LABEL = "seglab.image-mounts"  # what the image got from this machine (SRC:DST,...)
_NO_GPU_DRIVER = "could not select device driver"  # dockerd has no NVIDIA device driver
_UNKNOWN_GPU = "unknown device"  # nvidia-container-cli: "device error: GPU-…: unknown device"
STDOUT, STDERR = 1, 2  # stream ids in the engine's multiplexed log frames
STREAM_SKEW_NS = 5_000_000_000


def start_failure(host: str, spec: LaunchSpec, detail: str) -> RuntimeFailure:
    """The error for an engine's refusal to start ``spec``'s container with ``detail``."""
    if spec.gpus and _NO_GPU_DRIVER in detail:
        return NvidiaRuntimeMissing(host, detail)
    if spec.gpus and _UNKNOWN_GPU in detail:
        return UnknownGpu(host, spec.gpus, detail)
    return LaunchFailed(f"{host}: {spec.container_name} did not start: {detail}")


def _read_exact(raw: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = raw.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _cursor(given: Mapping[int, tuple[int, int]]) -> LogCursor:
    return LogCursor(*given[STDOUT], *given[STDERR])


class DockerRuntime:
    """Runs as containers on one Docker engine.

    ``base_url`` is the engine's socket (``unix:///path``; default ``$DOCKER_HOST`` or
    the system socket); ``host`` names the host in messages; ``dev_mounts`` are added to
    every run, read-only (development: another checkout, see docs/runtimes.md). On an engine
    of this machine (``local``), an image that needs seglab from the host (the CI image,
    :func:`images.host_mounts`) gets it mounted read-only, recorded in the container's
    ``seglab.image-mounts`` label; a dev mount with the same target wins.
    """

    kind = RuntimeKind.DOCKER

    def __init__(
        self,
        base_url: str | None = None,
        *,
        host: str = "local",
        dev_mounts: Sequence[Mount] = (),
        timeout: int = 60,
        local: bool = False,
    ) -> None:
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        self.host = host
        self.dev_mounts = tuple(dev_mounts)
        for mount in self.dev_mounts:
            mount.check_safe()
            if not mount.read_only:
                raise SpecError(f"dev mount {mount.source}:{mount.target} must be read-only")
        self.timeout = timeout
        self.local = local
        self._client: docker.DockerClient | None = None
        self._image_labels: dict[str, dict[str, str]] = {}

    @classmethod
    def from_env(
        cls, base_url: str | None = None, *, host: str = "local", local: bool = False
    ) -> DockerRuntime:
        """A runtime whose dev mounts come from ``$SEGLAB_DEV_MOUNTS`` (``SRC:DST[:ro],...``)."""
        dev_mounts = parse_mounts(os.environ.get(DEV_MOUNTS_ENV, ""))
        return cls(base_url, host=host, dev_mounts=dev_mounts, local=local)

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, connected on first use; raises EngineUnavailable."""
        if self._client is None:
            try:
                client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
                client.ping()
            except (DockerException, OSError) as exc:
                raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
            self._client = client
        return self._client

    def check(self) -> None:
        """Connect to the engine (once); raises EngineUnavailable when it does not answer."""
        self.client  # noqa: B018 - connecting is the check

    def close(self) -> None:
        """Close the connection pool (the runtime reconnects on next use)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- launching ------------------------------------------------------------------

    def image_mounts(self, image: str) -> tuple[Mount, ...]:
        """What ``image`` needs from this machine (none on a remote engine), less the
        targets the dev mounts cover. Raises ImageMissing when the engine lacks it."""
        if not self.local:
            return ()
        if image not in self._image_labels:
            try:
                found = self.client.images.get(image)
            except ImageNotFound as exc:
                raise ImageMissing(image, self.host) from exc
            except (APIError, OSError) as exc:
                raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
            self._image_labels[image] = dict(found.labels or {})
        covered = {mount.target for mount in self.dev_mounts}
        needed = images.host_mounts(self._image_labels[image])
        return tuple(mount for mount in needed if mount.target not in covered)

    def host_config(self, spec: LaunchSpec, extra: Sequence[Mount] = ()) -> dict[str, Any]:
        """The container's HostConfig for ``spec`` (and ``extra`` read-only mounts)."""
        mounts = (*spec.mounts, *self.dev_mounts, *extra)
        targets = [mount.target for mount in mounts]
        if len(set(targets)) != len(targets):
            raise SpecError(f"a run mount and a dev mount share a target in {targets}")
        options: dict[str, Any] = {
            "mounts": [
                DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only)
                for m in mounts
            ],
            "shm_size": spec.shm_size,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "init": spec.init,
            "pids_limit": spec.pids_limit,
        }
        if spec.network_mode is not None:
            options["network_mode"] = spec.network_mode
        elif not spec.network:
            options["network_mode"] = "none"
        if spec.memory:
            options["mem_limit"] = spec.memory
            options["memswap_limit"] = spec.memory  # no swap: over the limit is an OOM kill
        if spec.cpus:
            options["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.gpus:
            options["device_requests"] = [
                DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])
            ]
        if spec.restarts:
            options["restart_policy"] = {
                "Name": "on-failure",
                "MaximumRetryCount": spec.restarts,
            }
        config: dict[str, Any] = self.client.api.create_host_config(**options)
        return config

    def create_args(self, spec: LaunchSpec, extra: Sequence[Mount] = ()) -> dict[str, Any]:
        """The `create_container` arguments for ``spec``, HostConfig included; ``extra``
        are the image's mounts (:meth:`image_mounts`), recorded in a label."""
        labels = dict(spec.labels)
        if extra:
            labels[IMAGE_MOUNTS_LABEL] = ",".join(f"{m.source}:{m.target}:ro" for m in extra)
        env = dict(spec.env)
        if not spec.gpus:
            # Images built on CUDA bases set NVIDIA_VISIBLE_DEVICES=all; CPU-only means none.
            env.setdefault("NVIDIA_VISIBLE_DEVICES", "void")
        return {
            "image": spec.image,
            "command": list(spec.command),
            "name": spec.container_name,
            "environment": env,
            "labels": labels,
            "user": spec.user,
            "working_dir": spec.workdir,
            "detach": True,
            "host_config": self.host_config(spec, extra),
        }

    def launch(self, spec: LaunchSpec) -> str:
        """Create and start the container; returns its id. Removes it again on failure.

        Two engine calls (create, start), the fewest a container takes, so a grid's
        launches from parallel threads cost the engine no more than `docker run -d` (on a
        local engine, one image inspection more per image and runtime).
        """
        api = self.client.api
        args = self.create_args(spec, self.image_mounts(spec.image))
        try:
            created = api.create_container(**args)
        except ImageNotFound as exc:
            raise ImageMissing(spec.image, self.host) from exc
        except APIError as exc:
            if exc.status_code == 409:
                raise NameInUse(spec.container_name) from exc
            raise LaunchFailed(
                f"{self.host}: the engine refused to create {spec.container_name}: "
                f"{exc.explanation or exc}"
            ) from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
        container_id = str(created["Id"])
        try:
            api.start(container_id)
        except APIError as exc:
            self._discard(container_id, reason=str(exc))
            raise start_failure(self.host, spec, str(exc.explanation or exc)) from exc
        except OSError as exc:  # after APIError, which is an OSError too
            self._discard(container_id, reason=str(exc))
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
        return container_id

    def _discard(self, container_id: str, reason: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except (DockerException, OSError) as exc:
            log.warning(
                "could not remove %s after a failed start (%s): %s", container_id, reason, exc
            )

    # -- finding and watching ------------------------------------------------------

    def _get(self, ref: str) -> Any:
        try:
            return self.client.containers.get(ref)
        except NotFound as exc:
            raise RunNotFound(ref) from exc
        except APIError as exc:
            raise RuntimeFailure(f"{self.host}: inspecting {ref} failed: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc

    def list(self, labels: Mapping[str, str | None] | None = None) -> list[RunInfo]:
        """Containers (running or not) carrying the labels; ``None`` value = has the key."""
        filters = [
            key if value is None else f"{key}={value}" for key, value in (labels or {}).items()
        ]
        try:
            found = self.client.containers.list(
                all=True, filters={"label": filters}, ignore_removed=True
            )
        except APIError as exc:
            raise RuntimeFailure(f"{self.host}: listing containers failed: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
        out = []
        for container in found:
            container_labels = dict(container.labels or {})
            if not matches(container_labels, labels):
                continue
            name = str(container.name)
            out.append(
                RunInfo(
                    ref=str(container.id),
                    name=name[len(CONTAINER_PREFIX) :]
                    if name.startswith(CONTAINER_PREFIX)
                    else name,
                    labels=container_labels,
                    state=state_from_attrs(container.attrs),
                )
            )
        return out

    def inspect(self, ref: str) -> RuntimeState:
        """The container's state from `docker inspect`."""
        return state_from_attrs(self._get(ref).attrs)

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        since: LogCursor | datetime | None = None,
        tail: int | None = None,
    ) -> Iterator[LogLine]:
        """Whole lines of stdout+stderr, resumable from a cursor with no gap or duplicate.

        The engine sends one frame per log record, tagged with its stream and prefixed
        with its timestamp. A line longer than the engine's 16 KiB buffer arrives as
        several records, only the last ending in a newline, possibly interleaved with
        records of the other stream; each stream's pieces are joined separately. Each
        record has a position (timestamp, ordinal among records with that timestamp); the
        cursor keeps, per stream, the position of the last record given out, and resuming
        asks the engine for records from just before the earlier of the two and drops the
        ones already given out.
        """
        container = self._get(ref)
        if isinstance(since, datetime):
            stamp = (since.astimezone(timezone.utc) - EPOCH) // timedelta(microseconds=1) * 1000
            since = LogCursor(stamp, 0, stamp, 0)
        cursor = since if since is not None and since.timed else LogCursor()
        if follow:
            for line in self._lines(
                container, self._frames(container.id, cursor, tail, True), cursor, flush=False
            ):
                cursor = line.cursor
                yield line
            if cursor.timed:
                tail = None  # go on from the cursor
        # Without follow; after one, to catch the records a follow of a container that just
        # stopped can end before (the engine closes the stream on the exit event).
        yield from self._lines(
            container, self._frames(container.id, cursor, tail, False), cursor, flush=True
        )

    def _frames(
        self, container_id: str, cursor: LogCursor, tail: int | None, follow: bool
    ) -> Iterator[tuple[int, bytes]]:
        """(stream, payload) frames of the engine's multiplexed log stream (no TTY)."""
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 1,
            "follow": 1 if follow else 0,
            "tail": "all" if tail is None else str(max(int(tail), 0)),
        }
        low = min(cursor.time_ns, cursor.err_time_ns)
        if low > 1000:
            low -= 1000  # a microsecond early: the engine's filter may round
            params["since"] = f"{low // 1_000_000_000}.{low % 1_000_000_000:09d}"
        api = self.client.api
        url = f"{api.base_url}/v{api.api_version}/containers/{container_id}/logs"
        try:
            # timeout=None: a follow may stay quiet for hours between lines.
            response = api.get(url, params=params, stream=True, timeout=None)
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
        try:
            if response.status_code == 404:
                raise RunNotFound(container_id)
            if not response.ok:
                raise RuntimeFailure(
                    f"{self.host}: logs of {container_id} failed: "
                    f"{response.status_code} {response.text.strip()}"
                )
            while True:
                header = _read_exact(response.raw, 8)
                if len(header) < 8:
                    return
                payload = _read_exact(response.raw, int.from_bytes(header[4:8], "big"))
                yield header[0], payload
        except ProtocolError as exc:  # the link broke mid-stream (e.g. an SSH forward dropped)
            raise EngineUnavailable(
                f"{self.host} ({self.base_url})", f"the log stream broke: {exc}"
            ) from exc
        finally:
            response.close()

    def _lines(
        self, container: Any, frames: Iterator[tuple[int, bytes]], start: LogCursor, flush: bool
    ) -> Iterator[LogLine]:
        given = {STDOUT: (start.time_ns, start.seen), STDERR: (start.err_time_ns, start.err_seen)}
        pending = {STDOUT: b"", STDERR: b""}
        # Bytes of a stream's unfinished line beyond MAX_LINE_BYTES: counted, not kept, so a
        # newline-less stream (a progress bar redrawn with CR) holds bounded memory.
        dropped = {STDOUT: 0, STDERR: 0}
        last_ns, ordinal = 0, 0
        # Records per timestamp; the pieces of a long line share one and may be interleaved
        # with the other stream's records, so this counts non-adjacent ones too.
        counts: dict[int, int] = {}
        for stream_id, frame in frames:
            stamp, _, payload = frame.partition(b" ")
            ns = parse_timestamp_ns(stamp.decode("ascii", "replace"))
            ordinal = counts[ns] = counts.get(ns, 0) + 1
            last_ns = ns
            if len(counts) > 4096:
                counts = {k: v for k, v in counts.items() if k > ns - 2 * STREAM_SKEW_NS}
            stream = STDERR if stream_id == STDERR else STDOUT
            position = (ns, ordinal)
            if position <= given[stream]:
                continue  # given out before this cursor
            pending[stream] += payload
            if not pending[stream].endswith(b"\n"):
                if len(pending[stream]) > MAX_LINE_BYTES:
                    dropped[stream] += len(pending[stream]) - MAX_LINE_BYTES
                    pending[stream] = pending[stream][:MAX_LINE_BYTES]
                continue  # a partial record: the rest of the line follows
            text, pending[stream] = pending[stream][:-1], b""
            if dropped[stream]:
                text, dropped[stream] = _cut(text, dropped[stream]), 0
            given[stream] = position
            for key, done in given.items():
                if key != stream and not pending[key]:
                    # The two streams are stamped by separate copiers and may reach the
                    # log out of time order, but never by more than a moment: a quiet
                    # stream's position trails the other's by STREAM_SKEW_NS.
                    given[key] = max(done, (ns - STREAM_SKEW_NS, 0))
            cursor = _cursor(given)
            when = datetime_from_ns(ns)
            for line in text.split(b"\n"):
                yield LogLine(line.decode("utf-8", "replace"), cursor, when)
        if flush and any(pending.values()):
            container.reload()
            if container.status not in ("running", "paused", "restarting"):
                # The run ended on an unterminated line: it is whole now.
                for key in (STDOUT, STDERR):
                    if pending[key]:
                        text, pending[key] = pending[key], b""
                        if dropped[key]:
                            text, dropped[key] = _cut(text, dropped[key]), 0
                        given[key] = (last_ns, ordinal)
                        yield LogLine(
                            text.decode("utf-8", "replace"),
                            _cursor(given),
                            datetime_from_ns(last_ns),
                        )

    # -- ending ---------------------------------------------------------------------

    def settle(self, ref: str) -> None:
        """Turn the container's restart policy off: its engine never starts it again.

        An ``on-failure`` policy brings back, at every start of the engine, a container
        that ended non-zero, a ``docker stop`` included (Docker tells a manual stop apart
        only for ``unless-stopped``). :meth:`stop` and :meth:`kill` call this first, and
        seglab calls it on a run it records as ended, so an ended run stays ended.
        """
        try:
            self.client.api.update_container(
                ref, restart_policy={"Name": "no", "MaximumRetryCount": 0}
            )
        except NotFound as exc:
            raise RunNotFound(ref) from exc
        except APIError as exc:
            raise RuntimeFailure(f"{self.host}: could not update {ref}: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc

    def stop(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM (the image's stop signal), ``timeout`` seconds of grace, then SIGKILL;
        never restarted by the engine afterwards (:meth:`settle`)."""
        container = self._get(ref)
        self.settle(ref)
        try:
            container.stop(timeout=max(0, round(timeout)))
        except APIError as exc:
            raise RuntimeFailure(f"{self.host}: could not stop {ref}: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc

    def kill(self, ref: str) -> None:
        """SIGKILL now (never restarted, :meth:`settle`); a no-op when the container has
        already ended."""
        container = self._get(ref)
        self.settle(ref)
        try:
            container.kill()
        except APIError as exc:
            if exc.status_code != 409:  # 409: not running, nothing to kill
                raise RuntimeFailure(f"{self.host}: could not kill {ref}: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """The exit code once the container ends; TimeoutError after ``timeout`` seconds."""
        container = self._get(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            result = container.wait(timeout=timeout)
        except APIError as exc:
            raise RuntimeFailure(f"{self.host}: waiting for {ref} failed: {exc}") from exc
        except OSError as exc:
            # The SDK reports a wait timeout as a read timeout of the HTTP request.
            if deadline is not None and time.monotonic() >= deadline - 0.5:
                raise TimeoutError(f"run {ref} still running after {timeout} s") from exc
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc
        return int(result["StatusCode"])

    def remove(self, ref: str, force: bool = False) -> None:
        """Remove the container (its logs go with it; the run directory stays)."""
        container = self._get(ref)
        try:
            container.remove(force=force)
        except APIError as exc:
            if exc.status_code == 409:
                raise RunStillRunning(ref) from exc
            raise RuntimeFailure(f"{self.host}: could not remove {ref}: {exc}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"{self.host} ({self.base_url})", str(exc)) from exc


def _cut(raw: bytes, dropped: int) -> bytes:
    """A line's first MAX_LINE_BYTES (whole characters) and a marker for the rest."""
    dropped += max(0, len(raw) - MAX_LINE_BYTES)
    raw = raw[:MAX_LINE_BYTES]
    keep = whole_chars(raw)
    return raw[:keep] + cut_marker(dropped + len(raw) - keep).encode()
