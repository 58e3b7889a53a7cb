"""Runs the Triton backend's cases under Triton's interpreter, in a fresh process.

TRITON_INTERPRET must be set before triton is imported, and this process may already
have imported it; so the cases (``triton_interpreter_cases.py``) run in a subprocess.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("triton_interpreter_cases.py")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_backend_matches_reference_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("STITCH_KERNEL_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 50, report
    assert "skipped" not in proc.stdout, report
