"""make validate's tables summarised: each method's mean per test and setting, with a bootstrap 95% interval over
queries, and how often it beats another method on the same query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.analysis.counterfactual import GROUPS
from pipeline.analysis.lds import mean_interval
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet


def rows(method: str, test: str, setting: str, query_ids: list[str], tasks: dict[str, str], values: np.ndarray,
         docs: int | None = None, tokens: int | None = None) -> list[dict]:
    """One test's rows (``schemas.VALIDATION``) for the queries of a removal group (factual and each reasoning
    task; the controls are answered from their prompt)."""
    return [{"method": method, "test": test, "setting": setting, "query_id": q, "task": tasks[q],
             "value": float(v) if np.isfinite(v) else None, "docs_removed": docs, "tokens_removed": tokens}
            for q, v in zip(query_ids, values) if tasks[q] in GROUPS]


def _round(value: float) -> float | None:
    return round(float(value), 5) if np.isfinite(value) else None


def summary(table: pa.Table, seed: int, against: str = "bm25") -> dict:
    """``{test: {setting: {method: {mean, low, high, queries, beats}}}}``; ``beats``: the share of queries on which
    the method's value is above ``against``'s (null for ``against`` itself, or when it is not in the table)."""
    rows = table.select(["test", "setting", "method", "query_id", "value"]).to_pylist()
    values: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["value"] is not None:
            values.setdefault((r["test"], r["setting"], r["method"]), {})[r["query_id"]] = r["value"]
    out: dict = {}
    for (test, setting, method), by_query in values.items():
        mean, low, high = mean_interval(np.fromiter(by_query.values(), dtype=np.float64), seed)
        other = values.get((test, setting, against))
        shared = sorted(set(by_query) & set(other)) if other and method != against else []
        beats = float(np.mean([by_query[q] > other[q] for q in shared])) if shared else np.nan
        out.setdefault(test, {}).setdefault(setting, {})[method] = {
            "mean": _round(mean), "low": _round(low), "high": _round(high), "queries": len(by_query),
            f"beats_{against}": _round(beats)}
    return out


def write(found: list[dict], out_dir: str, metrics_dir: str, stage: str, seed: int) -> Path:
    """A test stage's rows to ``out_dir/STAGE.parquet`` and their summary to ``metrics_dir/validation_STAGE.json``,
    each method's mean printed per test and setting."""
    out = Path(out_dir) / f"{stage}.parquet"
    table = pa.Table.from_pylist(found, schema=schemas.VALIDATION)
    write_parquet(table, out, schemas.VALIDATION)
    numbers = summary(table, seed)
    write_json(numbers, Path(metrics_dir) / f"validation_{stage}.json")
    for test, settings in numbers.items():
        for setting, by_method in settings.items():
            print(f"{test} ({setting}): " + ", ".join(f"{m} {v['mean']:+.4g}" for m, v in by_method.items()
                                                     if v["mean"] is not None))
    return out
