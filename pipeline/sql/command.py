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

import pyarrow as pa

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


def run(params: Params, args: argparse.Namespace) -> int:
    sql_dir = params.analysis.sql_dir
    if args.list:
        for q in db.named_queries(sql_dir):
            takes = [*q.required, *(f"{k}={v}" for k, v in q.defaults.items())]
            print(f"{q.name:24} {q.description}  [{', '.join(takes)}]")
        return 0
    if bool(args.query) == bool(args.name):
        raise WherefromError("sql: give either a SELECT statement or --name NAME (see wherefrom sql --list)")
    given = _parse_params(args.param)
    con = db.connect(params)
    if args.name:
        named = db.named_query(sql_dir, args.name)
        table = db.query(con, named.sql, db.bind(named, given), source=str(named.path))
    else:
        if given:
            raise WherefromError("sql: --param applies to named queries (--name)")
        table = db.query(con, args.query)
    show(table, args.format, args.max_rows)
    return 0
