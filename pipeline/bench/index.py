"""Benchmark the gradient index on a finished run (after `make demo`): fidelity to the exact scores, and speed.

    python -m pipeline.bench.index [--params params.yaml] [--sizes 16 32 64] [--kinds random eigen]

It first runs the `scores` stage as the run's params set it, into a temporary folder: that pass is both the
exact reference and the baseline time. Then, for each projection kind and size k, it builds the index (the
`index` stage, on Dask) and compares its scores of the same queries' whole completions with the exact ones:
Spearman per query over every document (median and minimum) and the overlap of the top 10. With the
default index it times one new question (`Asker.ask`, the completion given), a suite of 100 queries, and
the cold `wherefrom ask` command (imports, model, factors and index loaded, one question). Every time is
measured in this run, on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

from influence import measurements, shards
from influence.index.build import build_index
from influence.scoring.runner import score_corpus
from pipeline.core.config import load_params
from pipeline.runs import asking, scoring, settings


def exact_matrix(scores_dir: Path, query_ids: list[str], doc_ids: np.ndarray) -> np.ndarray:
    """The exact scores of every query's whole completion, ``[queries, documents]`` in the given orders."""
    out = shards.whole_scores(scores_dir, query_ids, doc_ids)
    assert not np.isnan(out).any(), "the exact scores miss some (query, document) pairs"
    return out


def fidelity(exact: np.ndarray, index: np.ndarray, top: int = 10) -> dict[str, float]:
    rho = [spearmanr(e, i)[0] for e, i in zip(exact, index)]
    overlap = [len(set(np.argsort(-e)[:top]) & set(np.argsort(-i)[:top])) / top for e, i in zip(exact, index)]
    return {"median_spearman": float(np.median(rho)), "min_spearman": float(np.min(rho)),
            "median_top10": float(np.median(overlap)), "mean_top10": float(np.mean(overlap))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--kinds", nargs="+", default=["random", "eigen"])
    ap.add_argument("--asks", type=int, default=10, help="new questions timed one at a time")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    rows = measurements.read(params.queries.out, None)  # whole completions: the index's own rows
    query_ids = [qid for qid, _ in rows.keys]

    exact = scoring.score_settings(params, params.scores.method, tmp / "scores")
    start = time.perf_counter()
    score_corpus(settings.documents(params), settings.queries(params), exact, **scoring.score_inputs(params),
                 cluster=settings.cluster(params))
    scores_s = time.perf_counter() - start
    print(f"exact scores pass (the scores stage as configured): {scores_s:.0f} s\n")

    results, default_dir = [], None
    for kind in args.kinds:
        for k in args.sizes:
            cfg = dataclasses.replace(params.index, out_dir=str(tmp / f"index-{kind}-{k}"), projection=kind, k=k)
            run = dataclasses.replace(params, index=cfg)
            built = build_index(run.model.dir, run.influence.factors_dir, settings.documents(run),
                                settings.index_settings(run), settings.cluster(run))
            asker = asking.asker(run)
            exact = exact_matrix(tmp / "scores", query_ids, asker.index.doc_ids)
            start = time.perf_counter()
            got = asker.scores(rows)
            suite_s = time.perf_counter() - start
            results.append({"kind": kind, "k": k, "bytes_per_doc": built.bytes_per_doc, "build_s": built.seconds,
                            "suite_s": suite_s, **fidelity(exact, got)})
            if kind == params.index.projection and k == params.index.k:
                default_dir = cfg.out_dir
            del asker

    print(f"\n{len(query_ids)} queries x {exact.shape[1]} documents; exact scores pass {scores_s:.0f} s")
    print("| projection | k | bytes/doc | median Spearman | min Spearman | top-10 overlap (median, mean) | "
          "build (x scores pass) | 120-query suite |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['kind']} | {r['k']} | {r['bytes_per_doc']:,} | {r['median_spearman']:.3f} | "
              f"{r['min_spearman']:.3f} | {r['median_top10']:.2f}, {r['mean_top10']:.2f} | "
              f"{r['build_s']:.0f} s ({r['build_s'] / scores_s:.2f}x) | {r['suite_s']:.2f} s |")

    if default_dir is None:
        return
    run = dataclasses.replace(params, index=dataclasses.replace(params.index, out_dir=default_dir))
    asker = asking.asker(run)
    hundred = measurements.Measurements(rows.keys[:100], rows.nll[:100], rows.prompts[:100], rows.completions[:100],
                                        {}, {})
    start = time.perf_counter()
    asker.scores(hundred)
    hundred_s = time.perf_counter() - start
    times = []
    for prompt, completion in list(zip(rows.prompts, rows.completions))[:args.asks]:
        start = time.perf_counter()
        asker.ask(prompt, completion)
        times.append(time.perf_counter() - start)
    raw = yaml.safe_load(Path(args.params).read_text())
    raw.setdefault("index", {})["out_dir"] = default_dir
    cold_params = tmp / "params.yaml"
    cold_params.write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.perf_counter()
    command = Path(sys.executable).parent / "wherefrom"  # the installed command: the checkout it was installed from
    subprocess.run([str(command), "ask", rows.prompts[0], "--completion", rows.completions[0], "--params",
                    str(cold_params)], check=True, capture_output=True)
    cold_s = time.perf_counter() - start
    print(f"\ndefault index ({params.index.projection}, k = {params.index.k}), loaded once: one new question "
          f"{statistics.median(times):.2f} s (median of {len(times)}, max {max(times):.2f} s); 100 queries "
          f"{hundred_s:.2f} s; the cold `wherefrom ask` command {cold_s:.1f} s")


if __name__ == "__main__":
    main()
