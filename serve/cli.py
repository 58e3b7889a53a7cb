"""The ``stitch`` command: one subcommand per job.

    stitch serve [--model M] [--adapters DIR ...] [--host H] [--port P] [--replicas N] [--config FILE]
    stitch train --data train.tsv --eval validation.tsv --method seq_bn --out DIR
    stitch bench http|sweep|make-adapters ...

To add a subcommand, write ``_add_<name>(subparsers)`` that adds its parser and sets
``handler`` (a function of the parsed namespace returning an exit status), and call it
from :func:`build_parser`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from adapters_lib.config import AdapterConfigError
from adapters_lib.models import ModelLoadError
from adapters_lib.training import TrainingError, add_arguments, args_from_namespace, train

# Errors a user can fix from the command line: reported in one line, exit status 2.
USER_ERRORS = (TrainingError, ModelLoadError, AdapterConfigError)


def build_parser() -> argparse.ArgumentParser:
    """The ``stitch`` parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="stitch",
                                     description="Serve many adapters on one frozen base model; train them.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bar")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(subparsers)
    _add_train(subparsers)
    _add_bench(subparsers)
    return parser


def _add_serve(subparsers) -> None:
    from .http import launch

    parser = subparsers.add_parser(
        "serve", help="serve adapters over HTTP on Ray Serve",
        description="Serve a base model and its adapters (OpenAI-compatible and /v1/classify endpoints). With no "
                    "options: the packaged MiniLM with the bundled demo adapters on http://127.0.0.1:8000.")
    launch.add_arguments(parser)
    parser.set_defaults(handler=launch.run)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a text-classification adapter on a TSV file",
        description="Train an adapter and its classification head on the frozen base model; keep the best "
                    "checkpoint by validation accuracy. Prints the run's metrics as JSON.")
    add_arguments(parser)
    parser.set_defaults(handler=_run_train)


def _add_bench(subparsers) -> None:
    from .bench import cli as bench_cli

    parser = subparsers.add_parser(
        "bench", help="load-test a Stitch server over HTTP; make synthetic adapters",
        description="Open-loop HTTP load tests (adapter popularity, arrival processes, SLOs, cache hit rates), "
                    "rate sweeps to saturation, and synthetic adapters to test with.")
    bench_cli.add_arguments(parser)


def _run_train(args: argparse.Namespace) -> int:
    result = train(args_from_namespace(args), progress=not args.quiet)
    json.dump(result.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stitch`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        sys.stderr.write(f"stitch {args.command}: error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
