"""What every benchmark records about the machine it ran on."""
from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """The CPU's model name (``lscpu``), else what ``platform`` knows."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()
