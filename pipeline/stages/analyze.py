"""Stage `analyze`: the paper's statistics on the scores, the classifier, and the same for each baseline.

    wherefrom analyze           # reads results/scores, results/baselines/*, the corpus and the queries

Every table is computed for each method and each scored segment: the whole completion (``all``, the
paper's measurement) and each answer segment, over the queries that have it. Writes, under
``analysis.out_dir`` (``results/``), one Parquet table each (schemas in
``pipeline/core/schemas.py``, views in ``wherefrom sql``): ``query_stats`` (one row per query: magnitude,
tail, answer in top-k, recall, class), ``top_mass`` (top p% sums), ``top_docs`` (top and bottom
documents with labels), ``correlations`` (query pairs), ``correlation_groups``, ``enrichment``
(sources in the top/bottom k), ``procedure_share`` (generated world), ``findings`` (every method's
verdict on each of the paper's findings); ``metrics.json``, every method's summary; and, in
``analysis.metrics_dir``, the small files DVC compares across experiments (``pipeline/analysis/headline.py``).
The tables are built by ``pipeline/analysis/tables.py``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from influence import methods as registry
from pipeline.analysis import findings, headline
from pipeline.analysis.score_matrix import score_rows
from pipeline.analysis.tables import Corpus, Method, analyze_method, dominant_choice, finite, segment_summary, summary
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.runs import methods as run_methods


def methods(params: Params) -> list[Method]:
    """Every method of the run (``influence/methods``), the paper's first."""
    out = []
    for name in run_methods.selected(params):
        path = run_methods.scores_dir(params, name)
        if name != registry.PAPER and not any(path.glob(schemas.SHARD_FILES)):
            raise WherefromError(f"{path}: no scores for method {name!r}; "
                                 f"run the {run_methods.stage(name)} stage first")
        out.append(Method(name, path))
    return out


def run(params: Params) -> Path:
    cfg = params.analysis
    queries = pq.read_table(params.queries.out)
    corpus = Corpus.read(params.corpus.out_dir, cfg.source_map)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = score_rows(params.scores.out_dir)
    segments_path = Path(params.queries.segments)
    choice = dominant_choice(pq.read_table(segments_path)) if segments_path.is_file() else {}
    results: dict[str, dict[str, dict[str, pa.Table]]] = {}
    for m in methods(params):
        for segment, qids in rows.items():
            these = queries.filter(pc.is_in(queries.column("query_id"), pa.array(qids)))
            results.setdefault(m.name, {})[segment] = analyze_method(m, these, corpus, params, out, segment, choice)
    for name, schema in schemas.ANALYSIS.items():
        parts = [
            t[name].select(schema.names).cast(schema) for per in results.values() for t in per.values() if name in t
        ]
        # every table is written, empty if it does not apply (procedure_share needs ground truth)
        write_parquet(pa.concat_tables(parts) if parts else schema.empty_table(), out / f"{name}.parquet", schema)
    summaries = {name: {**summary(per[schemas.WHOLE]),
                        "segments": {s: segment_summary(t) for s, t in per.items() if s != schemas.WHOLE}}
                 for name, per in results.items()}
    table = findings.compute(results)
    write_parquet(table, out / "findings.parquet", schemas.FINDINGS)
    tally = findings.describe(*findings.count(table))
    write_json({**finite(summaries), "findings_reproduced": tally}, out / "metrics.json")
    headline.write(cfg.metrics_dir, table, summaries, results[registry.PAPER][schemas.WHOLE])
    print(f"analyze: {len(results)} methods ({', '.join(results)}) x {queries.num_rows} queries "
          f"({', '.join(rows)}) x {corpus.n_docs} documents -> {out}/ (the paper's findings, influence: {tally})")
    return out
