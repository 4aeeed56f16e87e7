"""`seglab gpus` and `seglab exporter` on a host configured to use the stand-in nvidia-smi."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seglab import paths
from seglab.cli import main
from seglab.events import Event
from seglab.registry import Registry, RunRecord, RunStatus
from tests.exporterlib import serving_exporter
from tests.serving import fetch
from tests.standin import use_standin


def _configure(exe: Path, interval: float = 0.5) -> None:
    paths.hosts_file().parent.mkdir(parents=True, exist_ok=True)
    paths.hosts_file().write_text(
        "hosts:\n"
        "  local:\n"
        "    telemetry: nvidia-smi\n"
        f"    nvidia_smi: {exe}\n"
        f"    telemetry_interval: {interval}\n"
    )


def test_gpus_json_returns_the_capture_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(use_standin(monkeypatch, gpus=2))
    assert main(["gpus", "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)
    assert host["host"] == "local"
    assert host["source"] == "nvidia-smi"
    assert host["status"] == "ok"
    assert host["message"] is None
    assert host["host_sample"]["cpu_count"] >= 1
    assert len(host["gpus"]) == 2
    gpu = host["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["utilization_gpu"] == 100
    assert gpu["memory_used_mib"] == 19818
    assert gpu["memory_total_mib"] == 81559
    assert gpu["power_draw_w"] == 631.95
    assert gpu["fan_percent"] is None
    assert gpu["pstate"] == "P0"
    assert [p["pid"] for p in gpu["processes"]] == [11327, 11328, 11345]
    assert gpu["processes"][2]["used_memory_mib"] == 15690
    assert gpu["processes"][2]["process_name"] == "./gpu_burn"
    assert host["gpus"][0]["uuid"] != host["gpus"][1]["uuid"]


def test_gpus_table_shows_bars_and_owners(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(use_standin(monkeypatch, capture="linux-x86_64__nvidia-h100-mig__590.48.01.txt"))
    assert main(["gpus", "--host", "local"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("local [nvidia-smi] ok  driver 590.48.01")
    gpu = out[1]
    assert "NVIDIA H100 80GB HBM3" in gpu
    assert "53°C" in gpu and "434/700 W" in gpu
    assert "util ·········· " in gpu  # MIG mode: no whole-GPU utilisation
    assert "11125/81559 MiB" in gpu
    assert "MIG x4" in gpu and "./gpu_burn (7484 MiB)" in gpu


def test_gpus_watch_json_streams_one_document_per_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _configure(use_standin(monkeypatch), interval=0.2)
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "gpus", "--watch", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        docs = [json.loads(process.stdout.readline()) for _ in range(3)]
    finally:
        process.send_signal(signal.SIGTERM)  # SIGINT is ignored by background jobs
        process.wait(timeout=20)
    assert process.returncode == 0
    assert all(doc[0]["status"] == "ok" for doc in docs)
    assert [doc[0]["gpus"][0]["memory_used_mib"] for doc in docs] == [19818] * 3
    times = [doc[0]["gpus"][0]["time"] for doc in docs]
    assert times == sorted(times) and times[0] < times[-1]  # live readings, not a replay


def test_gpus_unknown_host_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(use_standin(monkeypatch))
    assert main(["gpus", "--host", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("seglab: ")
    assert "nope" in err and "local" in err
    assert "Traceback" not in err


def test_gpus_reports_a_missing_nvidia_smi(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(tmp_path / "bin" / "nvidia-smi")
    assert main(["gpus", "--json", "--timeout", "10"]) == 0
    (host,) = json.loads(capsys.readouterr().out)
    assert host["status"] == "degraded"
    assert "cannot start" in host["message"]
    assert host["gpus"] == []


def test_gpus_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gpus", "--help"])
    out = capsys.readouterr().out
    assert "--json" in out and "--watch" in out and "hosts.yaml" in out


def _add_running_run() -> None:
    with Registry() as registry:
        registry.upsert_run(
            RunRecord(
                run_id="seed.default.ab12",
                recipe="seed",
                variant="default",
                host="local",
                runtime="process",
                status=RunStatus.RUNNING,
            )
        )
        registry.add_events(
            "seed.default.ab12",
            [
                Event(
                    "train",
                    1,
                    time.time(),
                    {"iter": 20, "epoch": 0, "loss": 0.75, "lr": 0.01, "img_per_s": 12.5},
                ),
                Event(
                    "eval",
                    2,
                    time.time(),
                    {
                        "iter": 20,
                        "epoch": 0,
                        "miou": 0.61,
                        "pixel_acc": 0.9,
                        "mean_acc": 0.7,
                        "per_class_iou": [0.5, 0.72],
                    },
                ),
            ],
        )


def _ready(text: str) -> bool:
    """Whether a scrape has both GPUs' readings and the run the exporter reads itself."""
    return 'seglab_gpu_power_draw_watts{host="local",index="1"' in text and (
        'seglab_run_loss{host="local",run_id="seed.default.ab12"}' in text
    )


def test_exporter_serves_parseable_prometheus_text(monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(use_standin(monkeypatch, gpus=2))
    _add_running_run()
    with serving_exporter() as (exporter, url):
        deadline = time.monotonic() + 20
        while not _ready(text := fetch(url)):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        power = {s.labels["index"]: s for s in families["seglab_gpu_power_draw_watts"].samples}
        assert power["0"].value == 631.95
        assert power["0"].labels["name"] == "NVIDIA H100 80GB HBM3"
        assert power["0"].labels["host"] == "local"
        assert power["0"].labels["uuid"] != power["1"].labels["uuid"]
        used = families["seglab_gpu_memory_used_bytes"].samples[0]
        assert used.value == 19818 * 1024 * 1024
        assert families["seglab_gpu_fan_speed_ratio"].samples == []  # N/A is not 0
        (up,) = families["seglab_host_telemetry_up"].samples
        assert (up.value, up.labels) == (1.0, {"host": "local", "source": "nvidia-smi"})
        status = {
            s.labels["status"]: s.value for s in families["seglab_host_telemetry_status"].samples
        }
        assert status["ok"] == 1.0 and status["degraded"] == 0.0
        util = families["seglab_gpu_utilization_ratio"].samples[0]
        assert util.value == 1.0  # 100 % as a ratio
        assert families["seglab_gpu_ecc_volatile_uncorrected_errors"].type == "counter"
        runs = {
            name: families[name].samples[0]
            for name in (
                "seglab_run_loss",
                "seglab_run_best_miou_ratio",
                "seglab_run_images_per_second",
            )
        }
        assert runs["seglab_run_loss"].value == 0.75
        assert runs["seglab_run_best_miou_ratio"].value == 0.61
        assert runs["seglab_run_images_per_second"].value == 12.5
        assert runs["seglab_run_loss"].labels == {"run_id": "seed.default.ab12", "host": "local"}
        if shutil.which("curl"):
            curl = subprocess.run(
                ["curl", "-sf", url], capture_output=True, text=True, check=True, timeout=20
            )
            assert any(
                f.name == "seglab_gpu_utilization_ratio"
                for f in text_string_to_metric_families(curl.stdout)
            )
        if shutil.which("promtool"):  # Debian's prometheus package
            check = subprocess.run(
                ["promtool", "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert (check.returncode, check.stdout + check.stderr) == (0, "")
        children = exporter.children(recursive=True)
        assert children, "the exporter streams nvidia-smi in a child process"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "stopping the exporter stops its nvidia-smi stream"


def _listen_backlog(port: int) -> int | None:
    """The listen backlog of the socket on ``port`` (ss's Send-Q), None without ss."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return max(int(line.split()[2]) for line in out.splitlines())


@pytest.mark.faults
def test_exporter_answers_200_concurrent_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(use_standin(monkeypatch, gpus=2))
    _add_running_run()
    with serving_exporter() as (_, url):
        deadline = time.monotonic() + 20
        while not _ready(fetch(url)):
            assert time.monotonic() < deadline, "the exporter never had GPU and run readings"
            time.sleep(0.2)
        backlog = _listen_backlog(int(url.rsplit(":", 1)[1].split("/")[0]))
        assert backlog is None or backlog >= 128, f"listen backlog {backlog}"
        scrapers = 200
        start = threading.Barrier(scrapers)
        bodies: list[str] = []
        failures: list[str] = []

        def scrape() -> None:
            start.wait()
            try:
                bodies.append(fetch(url, timeout=120))
            except OSError as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [] and len(bodies) == scrapers
        for body in bodies:
            families = {f.name: f for f in text_string_to_metric_families(body)}
            assert len(families["seglab_gpu_power_draw_watts"].samples) == 2
            assert families["seglab_run_loss"].samples[0].value == 0.75


def test_exporter_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exporter", "--port", "70000"]) == 1
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
