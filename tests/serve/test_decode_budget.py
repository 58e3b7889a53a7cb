"""The decode budget benchmark times the work it names, on the shapes it names."""
from __future__ import annotations

import pytest
import torch

from benchmarks.engine.decode_budget import LABELS, adapter_bytes, main, model_linears, step_functions
from benchmarks.engine.workload import QUICK


def test_linears_are_the_models_seven_per_layer_with_slot_stacks():
    linears = model_linears(QUICK, slots=8)
    assert len(linears) == 7 * QUICK.layers
    h, ffn, r = QUICK.hidden, QUICK.ffn, QUICK.rank
    assert [tuple(lin.W.shape) for lin in linears[:7]] == [(h, h)] * 4 + [(ffn, h)] * 2 + [(h, ffn)]
    assert all(lin.A.shape == (8, r, lin.W.shape[1]) and lin.B.shape == (8, lin.W.shape[0], r) for lin in linears)
    per_row = QUICK.layers * r * (4 * 2 * h + 3 * (h + ffn)) * 4
    assert adapter_bytes(linears, rows=3) == 3 * per_row


def test_every_timed_function_runs_and_the_table_names_each(tmp_path):
    linears = model_linears(QUICK, slots=8)
    functions = step_functions(linears, torch.tensor([5, 0, 7]))
    assert set(functions) == set(LABELS)
    for run in functions.values():
        run()
    threads = ["--threads", str(torch.get_num_threads())]  # main sets them: keep the suite's
    path = main(["--quick", "--rows", "4", "--slots", "8", "--repeats", "2", *threads, "--out", str(tmp_path)])
    text = path.read_text()
    for label in LABELS.values():
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert float(row.split("|")[2]) > 0
    assert "4 decode rows with distinct adapters out of 8 slots" in text


def test_more_rows_than_slots_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--rows 9 needs at least as many --slots"):
        main(["--quick", "--rows", "9", "--slots", "8", "--out", str(tmp_path)])
