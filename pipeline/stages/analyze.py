"""Stage `analyze`: the paper's statistics on the scores, the classifier, and the same for each baseline.

    wherefrom analyze           # reads results/scores, results/baselines/*, the corpus and the queries

Writes, under ``analysis.out_dir`` (``results/``), one Parquet table each (schemas in
``pipeline/core/schemas.py``, views in ``wherefrom sql``): ``query_stats`` (one row per query: magnitude,
tail, answer in top-k, recall, class), ``top_mass`` (top p% sums), ``top_docs`` (top and bottom
documents with labels), ``correlations`` (query pairs), ``correlation_groups``, ``enrichment``
(sources in the top/bottom k), ``procedure_share`` (generated world), ``findings`` (ours beside the
paper's); and ``metrics.json``, the headline numbers for ``dvc metrics show``. The tables are built
by ``pipeline/analysis/tables.py``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.analysis import findings
from pipeline.analysis.tables import Corpus, Method, analyze_method, finite, summary
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError


def methods(params: Params) -> list[Method]:
    out = [Method("influence", Path(params.scores.out_dir))]
    for name in params.baselines.methods:
        path = Path(params.baselines.out_dir) / name
        if not any(path.glob(schemas.SHARD_FILES)):
            raise WherefromError(f"{path}: no scores for baseline {name!r}; run the baselines stage first")
        out.append(Method(name, path))
    return out


def run(params: Params) -> Path:
    cfg = params.analysis
    queries = pq.read_table(params.queries.out)
    corpus = Corpus.read(params.corpus.out_dir)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_method = {m.name: analyze_method(m, queries, corpus, params, out) for m in methods(params)}
    for name, schema in schemas.ANALYSIS.items():
        parts = [t[name].select(schema.names).cast(schema) for t in per_method.values() if name in t]
        # every table is written, empty if it does not apply (procedure_share needs ground truth)
        write_parquet(pa.concat_tables(parts) if parts else schema.empty_table(), out / f"{name}.parquet", schema)
    summaries = {name: summary(tables) for name, tables in per_method.items()}
    table = findings.compute(per_method)
    write_parquet(table, out / "findings.parquet", schemas.FINDINGS)
    write_json({**finite(summaries), "findings_reproduced": f"{sum(table.column('reproduces').to_pylist())}/{table.num_rows}"},
               out / "metrics.json")
    print(f"analyze: {len(per_method)} methods ({', '.join(per_method)}) x {queries.num_rows} queries x "
          f"{corpus.n_docs} documents -> {out}/ (findings reproduced: "
          f"{sum(table.column('reproduces').to_pylist())} of {table.num_rows})")
    return out
