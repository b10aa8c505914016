"""DuckDB over the pipeline's Parquet: views made at connect time, read-only, and named SQL files.

Views are created on every connection (never stored in a ``.duckdb`` file, whose relative globs break
from another directory). After that the connection is locked down: DuckDB may read only the
project's data and results directories, its configuration is locked, and ``query`` accepts nothing
but SELECT (and EXPLAIN), so no statement can write a file or change a table.

Named queries live in ``reports/sql/NAME.sql``. Their header says what they return and which
parameters they take::

    -- Top documents of one query, with their source, label and text.
    -- param query_id: the query, e.g. arithmetic-000
    -- param k = 10: how many documents

and the body uses them as ``$query_id`` and ``$k``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import RESULTS, SHARD_FILES, STUDY
from pipeline.core.stages import STAGES
from pipeline.runs import methods as run_methods

_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# the stage that writes what each view reads, named when a view is asked for before it exists
VIEW_STAGE = {view: stage for stage in STAGES.values() for view in stage.views}


def _literal(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def _seeded(path: Path, missing: str) -> str:
    """All of a test's file, with ``missing`` as its ``seed`` column when it was written before it had one."""
    seed = "" if "seed" in pq.read_schema(path).names else f", {missing} AS seed"
    return f"SELECT *{seed} FROM read_parquet({_literal(path)})"


def view_sources(params: Params) -> dict[str, str]:
    """View name -> the SELECT behind it, for every input that exists on disk now."""
    views: dict[str, str] = {}
    scores = Path(params.scores.out_dir)
    if any(scores.glob(SHARD_FILES)):
        views["scores"] = f"SELECT * FROM read_parquet({_literal(scores)} || '/{SHARD_FILES}', hive_partitioning=false)"
    every = {m: run_methods.scores_dir(params, m) for m in run_methods.selected(params)}
    every = {m: path for m, path in every.items() if any(path.glob(SHARD_FILES))}
    if every:  # every method of the run, the paper's too, each row with its method
        views["method_scores"] = " UNION ALL ".join(
            f"SELECT '{m}' AS method, * FROM read_parquet({_literal(path)} || '/{SHARD_FILES}', "
            "hive_partitioning=false)" for m, path in every.items())
    for name, path in (("queries", Path(params.queries.out)), ("segments", Path(params.queries.segments))):
        if path.is_file():
            views[name] = f"SELECT * FROM read_parquet({_literal(path)})"
    # each file a test stage wrote, in one schema; one written before training draws were recorded has no seed:
    # the counterfactual's was this run's own draw, a validation file's is not known here
    counterfactual = Path(params.counterfactual.out)
    if counterfactual.is_file():
        views["counterfactual"] = _seeded(counterfactual, f"{params.training_seed}::BIGINT")
    validation = [_seeded(p, "NULL::BIGINT") for p in sorted(Path(params.validation.out_dir).glob("*.parquet"))]
    if "counterfactual" in views:  # the demo's leave-500-out, in the same columns
        validation.append("SELECT method, 'leave_k_out' AS test, 'k=' || group_docs_removed || ', demo' AS setting, "
                          "query_id, task, delta_nll AS value, docs_removed, tokens_removed, seed FROM counterfactual "
                          "WHERE removal_group IS NOT NULL")
    if validation:
        views["validation"] = " UNION ALL ".join(validation)
    for name, file in (("validation_findings", "findings_by_draw"), ("validation_finding_spread", "finding_spread")):
        path = Path(params.validation.out_dir) / "findings" / f"{file}.parquet"  # the lds stage's run, per draw
        if path.is_file():
            views[name] = f"SELECT * FROM read_parquet({_literal(path)})"
    corpus = Path(params.corpus.out_dir)
    if any(corpus.glob("*.parquet")):
        views["corpus"] = f"SELECT * FROM read_parquet({_literal(corpus)} || '/*.parquet')"
    for name in RESULTS:
        path = Path(params.analysis.out_dir) / f"{name}.parquet"
        if path.is_file():
            views[name] = f"SELECT * FROM read_parquet({_literal(path)})"
    for name in STUDY:
        path = Path(params.study.out_dir) / f"{name}.parquet"
        if path.is_file():
            views[name] = f"SELECT * FROM read_parquet({_literal(path)})"
    return views


def connect(params: Params) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view per existing input and result, then locked read-only."""
    con = duckdb.connect(":memory:")
    for name, select in view_sources(params).items():
        con.execute(f"CREATE VIEW {name} AS {select}")
    readable = {str(Path(p).resolve()) + "/" for p in (params.scores.out_dir, params.baselines.out_dir,
                                                       Path(params.queries.out).parent,
                                                       Path(params.queries.segments).parent, params.corpus.out_dir,
                                                       params.analysis.out_dir, Path(params.counterfactual.out).parent,
                                                       params.validation.out_dir, params.study.out_dir)}
    con.execute("SET allowed_directories = ?", [sorted(readable)])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict | None = None, source: str = "sql") -> pa.Table:
    """Run one read-only statement; any failure is a one-line ``WherefromError`` naming ``source``."""
    relation = _run(con, sql, parameters, source)
    try:
        return relation.to_arrow_table()
    except duckdb.Error as err:
        raise WherefromError(f"{source}: {_one_line(err)}") from None


def stream(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict | None = None, source: str = "sql",
           batch_rows: int = 100_000) -> pa.RecordBatchReader:
    """The same, as record batches: a result of any size without holding it in memory."""
    relation = _run(con, sql, parameters, source)
    try:
        return relation.to_arrow_reader(batch_rows)
    except duckdb.Error as err:
        raise WherefromError(f"{source}: {_one_line(err)}") from None


def _run(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict | None, source: str) -> duckdb.DuckDBPyRelation:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise WherefromError(f"{source}: {_one_line(err)}") from None
    if len(statements) != 1:
        raise WherefromError(f"{source}: expected one SQL statement, got {len(statements)}")
    if statements[0].type not in _READ_ONLY:
        raise WherefromError(f"{source}: read-only: only SELECT statements run here, "
                             f"not {statements[0].type.name}")
    try:
        return con.sql(sql, params=parameters or None)
    except duckdb.CatalogException as err:
        missing = re.search(r"Table with name (\w+) does not exist", str(err))
        if missing and missing.group(1) in VIEW_STAGE:
            stage = VIEW_STAGE[missing.group(1)]
            raise WherefromError(f"{source}: no {missing.group(1)} yet: run the {stage.name} stage first "
                                 f"({stage.how_to_run})") from None
        if missing:  # DuckDB would suggest one of its own catalog functions
            raise WherefromError(f"{source}: no view {missing.group(1)!r} (views: {', '.join(view_names(con))}; "
                                 "wherefrom sql --views lists their columns)") from None
        raise WherefromError(f"{source}: {_one_line(err)}") from None
    except duckdb.Error as err:
        raise WherefromError(f"{source}: {_one_line(err)}") from None


def view_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The views this connection made (those whose inputs exist), by name."""
    return [v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]


def _one_line(err: Exception) -> str:
    """DuckDB's message on one line, whole (some, like an extension's install hint, span several)."""
    return " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())


@dataclass(frozen=True)
class NamedQuery:
    name: str
    path: Path
    description: str
    required: tuple[str, ...]
    defaults: dict[str, str]
    sql: str


_PARAM = re.compile(r"^--\s*param\s+(\w+)\s*(?:=\s*([^:]+?))?\s*(?::.*)?$")


def named_query(sql_dir: str | Path, name: str) -> NamedQuery:
    path = Path(sql_dir) / f"{name}.sql"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        known = ", ".join(q.name for q in named_queries(sql_dir)) or "none"
        raise WherefromError(f"{path}: no such named query (known: {known})")
    text = path.read_text()
    header = []
    for line in text.splitlines():  # the leading comment block
        if not line.strip().startswith("--"):
            break
        header.append(line.strip())
    description = " ".join(h.lstrip("- ").strip() for h in header if not _PARAM.match(h))  # every line of it
    required, defaults = [], {}
    for line in header:
        m = _PARAM.match(line)
        if m and m.group(2) is None:
            required.append(m.group(1))
        elif m:
            defaults[m.group(1)] = m.group(2).strip()
    return NamedQuery(name, path, description, tuple(required), defaults, text)


def named_queries(sql_dir: str | Path) -> list[NamedQuery]:
    return [named_query(sql_dir, p.stem) for p in sorted(Path(sql_dir).glob("*.sql"))]


def bind(q: NamedQuery, given: dict[str, str]) -> dict[str, object]:
    """Given parameters merged over the defaults, as numbers where they look like numbers."""
    unknown = sorted(set(given) - set(q.required) - set(q.defaults))
    if unknown:
        raise WherefromError(
            f"{q.path}: unknown parameter {unknown[0]!r} (takes: {', '.join([*q.required, *q.defaults])})"
        )
    missing = [p for p in q.required if p not in given]
    if missing:
        raise WherefromError(f"{q.path}: missing parameter {missing[0]!r} (give --param {missing[0]}=VALUE)")
    values = {**q.defaults, **given}
    used = set(re.findall(r"\$(\w+)", q.sql))
    return {k: _typed(v) for k, v in values.items() if k in used}


def _typed(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
