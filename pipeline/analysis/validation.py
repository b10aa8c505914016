"""make validate's tables summarised: each method's mean per test and setting, with a bootstrap 95% interval over
queries, how often it beats another method on the same query, and each expectation the README declared before
the first run, held in k of n training draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from influence.methods import CHANCE, LEXICAL, PAPER, ekfac_cosine, identity, relatif
from pipeline.analysis.counterfactual import GROUPS
from pipeline.analysis.lds import mean_interval
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet


def rows(method: str, test: str, setting: str, query_ids: list[str], tasks: dict[str, str], values: np.ndarray,
         seed: int, docs: int | None = None, tokens: int | None = None) -> list[dict]:
    """One test's rows (``schemas.VALIDATION``) on the draw of training seed ``seed``, for the queries of a removal
    group (factual and each reasoning task; the controls are answered from their prompt)."""
    return [{"method": method, "test": test, "setting": setting, "query_id": q, "task": tasks[q],
             "value": float(v) if np.isfinite(v) else None, "docs_removed": docs, "tokens_removed": tokens,
             "seed": seed} for q, v in zip(query_ids, values) if tasks[q] in GROUPS]


def _round(value: float) -> float | None:
    return round(float(value), 5) if np.isfinite(value) else None


def summary(table: pa.Table, seed: int, against: str = LEXICAL) -> dict:
    """``{test: {setting: {method: {mean, low, high, queries, beats}}}}``; ``beats``: the share of queries on which
    the method's value is above ``against``'s (null for ``against`` itself, or when it is not in the table). Over
    several training draws, a query of each draw counts once (``queries`` counts them)."""
    rows = table.select(["test", "setting", "method", "query_id", "value", "seed"]).to_pylist()
    values: dict[tuple, dict[tuple, float]] = {}
    for r in rows:
        if r["value"] is not None:
            values.setdefault((r["test"], r["setting"], r["method"]), {})[r["seed"], r["query_id"]] = r["value"]
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


@dataclass(frozen=True)
class Declared:
    """An expectation the README declared before the first run (from the literature), as a test of one draw's
    means per setting: ``holds`` maps ``{method: {mean, low, high}}`` to a verdict, None when a method it names
    is not in the run."""

    statement: str
    test: str
    holds: Callable[[dict[str, dict]], bool | None]
    settings: Callable[[str], bool] = lambda setting: True  # which of the test's settings it speaks of


def _above(a: str, b: str) -> Callable[[dict[str, dict]], bool | None]:
    return lambda by: None if a not in by or b not in by else by[a]["mean"] > by[b]["mean"]


def _highest(a: str) -> Callable[[dict[str, dict]], bool | None]:
    return lambda by: None if a not in by else all(by[a]["mean"] >= v["mean"] for v in by.values())


def _covers_zero(a: str) -> Callable[[dict[str, dict]], bool | None]:
    return lambda by: None if a not in by or by[a]["low"] is None else by[a]["low"] <= 0 <= by[a]["high"]


def _among(*settings: str) -> Callable[[str], bool]:
    return lambda setting: setting in settings


# The methods the README's declaration names, each by its module in the registry
IDENTITY, COSINE, RELATIF = (module.METHOD.name for module in (identity, ekfac_cosine, relatif))

# The README's declaration, statement by statement ("BM25 ... leads less at small k" names no test, so not that).
# The demo's leave-500-out (the counterfactual stage) reaches the validation view as setting "k=500, demo".
DECLARED = (
    Declared(f"{PAPER} above {IDENTITY}", "lds", _above(PAPER, IDENTITY)),
    Declared(f"{COSINE} below {PAPER}", "lds", _above(PAPER, COSINE)),
    Declared(f"{RELATIF} below {PAPER}", "lds", _above(PAPER, RELATIF)),
    Declared(f"{LEXICAL} below {PAPER}", "lds", _above(PAPER, LEXICAL)),
    Declared(f"{CHANCE}'s interval covers 0", "lds", _covers_zero(CHANCE)),
    Declared(f"{PAPER}'s removal hurts more than {CHANCE}'s", "leave_k_out", _above(PAPER, CHANCE),
             _among("k=10", "k=50")),
    Declared(f"{PAPER}'s removal hurts more than {IDENTITY}'s", "leave_k_out", _above(PAPER, IDENTITY),
             _among("k=10", "k=50")),
    Declared(f"{LEXICAL}'s removal hurts most", "leave_k_out", _highest(LEXICAL),
             lambda setting: setting.endswith(", demo")),
    Declared(f"{IDENTITY} highest", "tail_patch_sgd", _highest(IDENTITY)),
    Declared(f"{COSINE} above {PAPER}", "tail_patch_adamw", _above(COSINE, PAPER)),
    Declared(f"{LEXICAL} below {PAPER}", "tail_patch_adamw", _above(PAPER, LEXICAL)),
)


def verdicts(table: pa.Table, seed: int) -> list[dict]:
    """Each declared statement per setting: in how many of the table's training draws it held (``held`` of
    ``draws``, the draws that have every method it names)."""
    column = table["seed"]  # null: a file written before draws were recorded, one draw
    by_draw = {s: summary(table.filter(pc.is_null(column) if s is None else pc.equal(column, s)), seed)
               for s in dict.fromkeys(column.to_pylist())}
    out = []
    for d in DECLARED:
        settings = dict.fromkeys(s for numbers in by_draw.values() for s in numbers.get(d.test, {}) if d.settings(s))
        for setting in settings:
            found = [d.holds(n[d.test][setting]) for n in by_draw.values() if setting in n.get(d.test, {})]
            found = [f for f in found if f is not None]
            if found:
                out.append({"statement": d.statement, "test": d.test, "setting": setting, "held": sum(found),
                            "draws": len(found)})
    return out


def write(found: list[dict], out_dir: str, metrics_dir: str, stage: str, seed: int) -> Path:
    """A test stage's rows to ``out_dir/STAGE.parquet``, and to ``metrics_dir/validation_STAGE.json`` their summary
    and each declared verdict's k of n draws, each method's mean printed per test and setting."""
    out = Path(out_dir) / f"{stage}.parquet"
    table = pa.Table.from_pylist(found, schema=schemas.VALIDATION)
    write_parquet(table, out, schemas.VALIDATION)
    numbers = summary(table, seed)
    held = verdicts(table, seed)
    nested: dict = {}  # as DVC shows metrics: numbers at the leaves
    for v in held:
        nested.setdefault(v["test"], {}).setdefault(v["setting"], {})[v["statement"]] = {
            "held": v["held"], "draws": v["draws"]}
    write_json({**numbers, "declared": nested}, Path(metrics_dir) / f"validation_{stage}.json")
    for test, settings in numbers.items():
        for setting, by_method in settings.items():
            print(f"{test} ({setting}): " + ", ".join(f"{m} {v['mean']:+.4g}" for m, v in by_method.items()
                                                     if v["mean"] is not None))
    for v in held:
        print(f"declared, {v['test']} ({v['setting']}): {v['statement']}: held in {v['held']} of {v['draws']} draws")
    return out
