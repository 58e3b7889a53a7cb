"""Write N synthetic adapters for a base model (the same as ``stitch bench make-adapters``).

    .venv/bin/python benchmarks/make_synthetic_adapters.py --out /tmp/adapters-1000 -n 1000
    .venv/bin/python benchmarks/make_synthetic_adapters.py --out /tmp/lm-adapters -n 64 --base ./tiny-llama --head none

Random non-zero weights, methods cycled (LoRA r4 / r8 / r16, seq_bn, IA3 by default), a
classification head each (``--head none`` for generation), Stitch's own format; prints
what it wrote, how long it took and the bytes on disk as JSON. See
:mod:`serve.bench.synthetic`.
"""
import sys

from serve.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "make-adapters", *sys.argv[1:]]))
