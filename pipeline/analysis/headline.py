"""What `dvc exp show`, `dvc exp diff` and `dvc plots` read: a few numbers and two small tables per run.

``headline.json`` holds five numbers, so that the README's `dvc exp show` fits a terminal: how many testable
findings reproduce, and the paper's central contrast (same-task reasoning r against factual r).
``findings.json`` holds every finding's number and the classifier's accuracy, for `dvc exp diff`. The full
detail stays in the Parquet tables and ``results/metrics.json``. These files are small and git-tracked
(``analysis.metrics_dir``), so every DVC experiment commits its own copy: numbers as numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from influence.methods import PAPER
from pipeline.analysis import findings
from pipeline.core.atomic import write_csv, write_json
from pipeline.world.tasks import TASKS

CLASSES = ("procedural", "document_specific")


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else round(float(value), 4)


def headline(table: pa.Table) -> dict:
    """How many of the paper's testable findings reproduce (influence's), and its central contrast."""
    holding, testable, total = findings.count(table)
    ours = {r["finding"]: r["value"] for r in table.to_pylist() if r["method"] == PAPER}
    return {"findings_reproduced": holding, "findings_testable": testable, "findings_total": total,
            "same_task_r": _number(ours.get("same_task_reasoning_r")),
            "factual_r": _number(ours.get("factual_pairs_r"))}


def detail(table: pa.Table, summaries: dict[str, dict]) -> dict:
    """Every finding's number (influence's; a segment's findings name their segment) and the classifier's
    accuracy, per method."""
    classifier = {f"{method}_vs_{ref}": _number(s["classifier"][f"vs_{ref}"]["accuracy"])
                  for method, s in summaries.items() for ref in ("kind", "truth")}
    return {"findings": {r["finding"]: _number(r["value"]) for r in table.to_pylist() if r["method"] == PAPER},
            "classifier": classifier}


def write(out_dir: str | Path, table: pa.Table, summaries: dict[str, dict], whole: dict[str, pa.Table]) -> None:
    """``headline.json``; ``findings.json``; ``top_mass.csv`` (mean top-p% share of positive influence per task,
    one column each); ``confusion.csv`` (each query's ground truth and predicted class, for DVC's confusion plot)."""
    out = Path(out_dir)
    write_json(headline(table), out / "headline.json")
    write_json(detail(table, summaries), out / "findings.json")
    mass, queries = whole["top_mass"], whole["query_stats"]
    task_of = dict(zip(queries.column("query_id").to_pylist(), queries.column("task").to_pylist()))
    rows = []
    for percent in sorted(set(mass.column("percent").to_pylist())):
        at = mass.filter(pc.equal(mass.column("percent"), percent)).to_pylist()
        row = {"percent": percent}
        for task in TASKS:
            shares = [r["top_share"] for r in at if task_of.get(r["query_id"]) == task and r["top_share"] is not None]
            row[task] = round(sum(shares) / len(shares), 4) if shares else None
        rows.append(row)
    write_csv(rows, out / "top_mass.csv", ["percent", *TASKS])
    confusion = [{"query_id": q, "truth": t, "predicted": p} for q, t, p in zip(
        *(queries.column(c).to_pylist() for c in ("query_id", "truth", "predicted"))) if t is not None]
    write_csv(confusion, out / "confusion.csv", ["query_id", "truth", "predicted"])
