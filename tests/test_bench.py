"""`make bench` on a tiny shape: it runs to its end (answer segments on, as the scores stage reads them), and
its table's lines agree with kronfluence on the same factors."""

from __future__ import annotations

import re

import pytest

from pipeline import bench

TINY = ["--docs", "24", "--queries", "3", "--layers", "1", "--hidden", "32", "--intermediate", "64", "--heads", "2",
        "--vocab", "400", "--context", "64", "--batch-size", "4", "--scale-out-pairs", "0"]
LINES = ("plain forward+backward", "kronfluence compute_pairwise_scores", "wherefrom scorer")


@pytest.mark.slow
def test_bench_runs_on_a_tiny_shape_and_its_scorer_ranks_as_kronfluence(capsys):
    bench.main(TINY)
    out = capsys.readouterr().out
    rows = {(m.group(1), m.group(2)): m.group(3).split() for m in re.finditer(
        rf"^({'|'.join(map(re.escape, LINES))})\s+(float32|bfloat16)\s+(.*)$", out, re.MULTILINE)}
    assert set(rows) == {(line, dtype) for line in LINES for dtype in ("float32", "bfloat16")}
    for line in LINES:
        assert float(rows[line, "float32"][0]) > 0  # docs/s
    # the last column: the worst query's Spearman against kronfluence's float32 scores
    assert float(rows["wherefrom scorer", "float32"][-1]) > 0.999
    assert re.search(r"^wherefrom scores stage \(Dask, I/O\)\s+float32\s+\d", out, re.MULTILINE)
    scored = re.search(r"\((\d+) rows: each whole completion and its answer segments\)", out)
    assert scored and int(scored.group(1)) > 3  # the 3 queries' answer segments scored beside the whole completions
