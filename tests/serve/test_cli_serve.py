"""`stitch serve` as a user runs it: the embedded default on loopback, one request, Ctrl-C, nothing left behind."""
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow
PORT = 8327


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, out[0::2]), map(int, out[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.add(pid)
        except ProcessLookupError:
            pass
    return alive


def test_stitch_serve_embedded_default_then_ctrl_c():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "serve.cli", "serve", "--port", str(PORT)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = _wait_for_banner(proc)
        assert f"http://127.0.0.1:{PORT}" in banner and "/v1/classify" in banner
        r = httpx.post(f"http://127.0.0.1:{PORT}/v1/classify", timeout=60,
                       json={"model": "sst2-seq_bn", "input": ["a gripping, beautifully acted film"]})
        assert r.status_code == 200 and r.json()["data"][0]["label"] == "positive"
        assert 'stitch_requests_total{endpoint="classify",status="200"} 1.0' in httpx.get(
            f"http://127.0.0.1:{PORT}/metrics").text
        ray_processes = _descendants(proc.pid)
        assert ray_processes, "stitch serve runs a local Ray"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        deadline = time.time() + 30
        while _alive(ray_processes) and time.time() < deadline:
            time.sleep(0.5)
        assert not _alive(ray_processes), "Ray processes left behind"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_banner(proc, timeout: float = 180) -> str:
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("Stitch is serving"):
            return "".join(lines[-1:]) + "".join(proc.stdout.readline() for _ in range(3))
    raise AssertionError("stitch serve did not come up:\n" + "".join(lines[-40:]))
