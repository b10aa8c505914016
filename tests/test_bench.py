"""`make bench` on a tiny shape: it runs to its end (answer segments on, as the scores stage reads them), and
its table's lines agree with kronfluence on the same factors."""

from __future__ import annotations

import re

import pytest

from influence.methods import gradient_methods
from pipeline.bench.__main__ import main
from pipeline.bench.factor_memory import factor_worker_peak

TINY = ["--docs", "24", "--queries", "3", "--layers", "1", "--hidden", "32", "--intermediate", "64", "--heads", "2",
        "--vocab", "400", "--context", "64", "--batch-size", "4", "--scale-out-pairs", "0", "--factor-memory-docs", "0"]
LINES = ("plain forward+backward", "kronfluence compute_pairwise_scores", "wherefrom scorer")


@pytest.mark.slow
def test_bench_runs_on_a_tiny_shape_and_its_scorer_ranks_as_kronfluence(capsys):
    main(TINY)
    out = capsys.readouterr().out
    rows = {(m.group(1), m.group(2)): m.group(3).split() for m in re.finditer(
        rf"^({'|'.join(map(re.escape, LINES))})\s+(float32|bfloat16)\s+(.*)$", out, re.MULTILINE)}
    assert set(rows) == {(line, dtype) for line in LINES for dtype in ("float32", "bfloat16")}
    for line in LINES:
        assert float(rows[line, "float32"][0]) > 0  # docs/s
    # the last column: the worst query's Spearman against kronfluence's float32 scores
    assert float(rows["wherefrom scorer", "float32"][-1]) > 0.999
    assert re.search(r"^factors stage per-shard overhead: -?\d+ ms per shard task \(24 against 2 shards", out, re.M)
    assert re.search(r"^wherefrom scores stage \(Dask, I/O\)\s+float32\s+\d", out, re.MULTILINE)
    assert re.search(r"^wherefrom scorer \+ variants\s+float32\s+\d", out, re.MULTILINE)
    assert re.search(rf"^variants \({', '.join(gradient_methods())}\) in the same pass: \d+\.\d\dx", out, re.M)
    scored = re.search(r"\((\d+) rows: each whole completion and its answer segments\)", out)
    assert scored and int(scored.group(1)) > 3  # the 3 queries' answer segments scored beside the whole completions


def test_the_factors_worker_memory_counts_what_a_lambda_task_holds():
    shape = {"n_layers": 1, "hidden_size": 32, "intermediate_size": 64, "n_heads": 2, "vocab_size": 400, "context": 16}
    peak = factor_worker_peak(shape, 2, 1)
    # per layer: gate and up read 32 inputs and write 64; down reads 64 and writes 32 (no biases). Each module
    # holds its two eigenvector matrices and an out x in matrix of corrected eigenvalues in float32, and the
    # count of documents they sum (int64).
    floats = 3 * (32 * 32 + 64 * 64) + 3 * 64 * 32
    assert peak["factors_mb"] == (floats * 4 + 3 * 8) / 2**20
    # ru_maxrss is a high-water mark: at start it already holds the imports' peak, which a tiny model may not pass
    assert peak["peak_mb"] >= peak["start_mb"] > 0 and peak["parameters"] > 400 * 32
