"""`wherefrom sql`: ad-hoc or named, read-only SQL over the pipeline's Parquet files.

    wherefrom sql "SELECT task, avg(alpha) FROM query_stats WHERE method = 'influence' GROUP BY task"
    wherefrom sql --name top_documents --param query_id=slope-003 --param k=5
    wherefrom sql --list                    # the named queries and their parameters
    wherefrom sql --views                   # the views there are now, and their columns

The views (``scores``, ``method_scores``, ``queries``, ``corpus`` and every ``results/`` table) are
made by ``pipeline/sql/db.py`` at connect time. CSV and JSON are streamed batch by batch, so the
first rows reach a pipe (``| head``) before the whole result is read.
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


def show(table: pa.Table, max_rows: int) -> None:
    import duckdb

    duckdb.from_arrow(table).show(max_rows=max_rows, max_width=200)


def write_stream(reader: pa.RecordBatchReader, fmt: str) -> None:
    """CSV or a JSON array on stdout, one record batch at a time."""
    out = sys.stdout
    if fmt == "csv":  # the csv module quotes only where needed (pyarrow's writer quotes every string)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(reader.schema.names)
        for batch in reader:
            writer.writerows(zip(*(c.to_pylist() for c in batch.columns)))
            out.flush()
        return
    out.write("[")
    first = True
    for batch in reader:
        for row in batch.to_pylist():
            out.write(("\n " if first else ",\n ") + json.dumps(row, default=str))
            first = False
        out.flush()
    out.write("\n]\n" if not first else "]\n")


def list_views(con) -> None:
    """Each view there is now, with its columns and their types."""
    for name in db.view_names(con):
        columns = con.execute(f"DESCRIBE {name}").fetchall()
        print(f"{name}: " + ", ".join(f"{c[0]} {c[1].lower()}" for c in columns))


# Named-query parameters whose value must exist: an unknown query id or method would give 0 rows.
KNOWN_VALUES = {
    "query_id": "SELECT DISTINCT query_id FROM queries",
    "method": "SELECT DISTINCT method FROM query_stats",
    "segment": "SELECT DISTINCT segment FROM query_stats",
    "test": "SELECT DISTINCT test FROM validation",
}


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
    try:
        with atomic_path(path) as tmp:
            writer = (pq.ParquetWriter(tmp, reader.schema) if path.suffix == ".parquet"
                      else pacsv.CSVWriter(tmp, reader.schema))
            with writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
    except OSError as err:
        raise WherefromError(f"--out {path}: cannot write: {err.strerror or err}") from None
    return rows


def run(params: Params, args: argparse.Namespace) -> int:
    sql_dir = params.analysis.sql_dir
    if args.list:
        for q in db.named_queries(sql_dir):
            takes = [*q.required, *(f"{k}={v}" for k, v in q.defaults.items())]
            print(f"{q.name}  [{', '.join(takes)}]\n    {q.description}")
        return 0
    if args.views:
        list_views(db.connect(params))
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
    if args.format == "table":
        show(db.query(con, sql, values, source), args.max_rows)
    else:
        write_stream(db.stream(con, sql, values, source), args.format)
    return 0
