"""`wherefrom sql`: ad-hoc or named, read-only SQL over the pipeline's Parquet files.

    wherefrom sql "SELECT task, avg(alpha) FROM query_stats WHERE method = 'influence' GROUP BY task"
    wherefrom sql --name top_documents --param query_id=slope-003 --param k=5
    wherefrom sql --list

The views (``scores``, ``baseline_scores``, ``queries``, ``corpus`` and every ``results/`` table) are
made by ``pipeline/sql/db.py`` at connect time; the README lists their columns.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.core.atomic import atomic_path
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.sql import db


def _parse_params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WherefromError(f"--param {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def show(table: pa.Table, fmt: str, max_rows: int) -> None:
    if fmt == "csv":  # the csv module quotes only where needed (pyarrow's writer quotes every string)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows(zip(*(c.to_pylist() for c in table.columns)))
    elif fmt == "json":
        print(json.dumps(table.to_pylist(), default=str, indent=1))
    else:
        import duckdb

        duckdb.from_arrow(table).show(max_rows=max_rows, max_width=200)


# Named-query parameters whose value must exist: an unknown query id or method would give 0 rows.
KNOWN_VALUES = {"query_id": "SELECT DISTINCT query_id FROM queries", "method": "SELECT DISTINCT method FROM query_stats",
                "segment": "SELECT DISTINCT segment FROM query_stats"}


def _check_values(con, named: db.NamedQuery, values: dict[str, object]) -> None:
    for key, select in KNOWN_VALUES.items():
        if key not in values:
            continue
        try:
            known = [str(v) for v in db.query(con, select).column(0).to_pylist()]
        except WherefromError:  # the view is not there yet: the query itself will say which stage to run
            continue
        if str(values[key]) not in known:
            shown = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
            raise WherefromError(f"{named.path}: {key} {values[key]!r} does not exist (known: {shown})")


def export(reader: pa.RecordBatchReader, path: Path) -> int:
    """Stream the result into ``path`` (.parquet or .csv) batch by batch, atomically; returns the rows written."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = 0
    with atomic_path(path) as tmp:
        writer = (pq.ParquetWriter(tmp, reader.schema) if path.suffix == ".parquet"
                  else pacsv.CSVWriter(tmp, reader.schema))
        with writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def run(params: Params, args: argparse.Namespace) -> int:
    sql_dir = params.analysis.sql_dir
    if args.list:
        for q in db.named_queries(sql_dir):
            takes = [*q.required, *(f"{k}={v}" for k, v in q.defaults.items())]
            print(f"{q.name:24} {q.description}  [{', '.join(takes)}]")
        return 0
    if bool(args.query) == bool(args.name):
        raise WherefromError("sql: give either a SELECT statement or --name NAME (see wherefrom sql --list)")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise WherefromError(f"--out {out}: expected a .parquet or .csv file")
    given = _parse_params(args.param)
    con = db.connect(params)
    if args.name:
        named = db.named_query(sql_dir, args.name)
        _check_values(con, named, {**named.defaults, **given})
        sql, values, source = named.sql, db.bind(named, given), str(named.path)
    else:
        if given:
            raise WherefromError("sql: --param applies to named queries (--name)")
        sql, values, source = args.query, None, "sql"
    if out is not None:
        rows = export(db.stream(con, sql, values, source), out)
        print(f"sql: {rows:,} rows -> {out}", file=sys.stderr)
        return 0
    show(db.query(con, sql, values, source), args.format, args.max_rows)
    return 0
