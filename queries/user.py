"""A user's query file (JSONL or Parquet): the paper's own queries, or new ones, instead of the suites.

One query per row. ``prompt`` is required. ``task`` is one of the suite tasks, or any name if ``kind``
(factual | reasoning) is given. ``completion`` is the model's answer to explain; when it is missing the
probe stage generates it. ``answer`` and ``step_answers`` are optional; without an answer, a
reasoning query's is read from its completion (the number after "answer is", else the last number).
The published format of Ruis et al. (2024) is read as is: ``category_inferred`` is the task and
``model``/``query_idx`` make the id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.core.errors import WherefromError
from queries.answers import final_answer
from queries.suites import QuerySpec
from queries.tasks import TASK_KIND

# The published query set's category names -> ours.
TASK_ALIASES = {"arithmetic_two_step": "arithmetic", "linear_equation": "linear"}


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise WherefromError(f"queries.file: {path}: no such file")
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix not in (".jsonl", ".json"):
        raise WherefromError(f"queries.file: {path}: expected a .jsonl or .parquet file")
    rows = []
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                rows.append(json.loads(line))
    except UnicodeDecodeError as err:
        raise WherefromError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise WherefromError(f"{path}: line {n}: not valid JSON ({err.msg})") from None
    return rows


def _number(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


def read(path: str | Path) -> tuple[list[QuerySpec], list[str | None]]:
    """The file's queries, and each one's given completion (None where the model must write it)."""
    path = Path(path)
    specs, completions, seen = [], [], set()
    for n, row in enumerate(_rows(path), start=1):
        where = f"{path}: query {n}"
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise WherefromError(f"{where}: empty or missing prompt")
        task = row.get("task") or row.get("category_inferred")
        task = TASK_ALIASES.get(task, task)
        kind = row.get("kind") or TASK_KIND.get(task)
        if not task or kind not in ("factual", "reasoning"):
            raise WherefromError(f"{where}: task {task!r} is not one of {', '.join(TASK_KIND)} (or give kind: factual "
                                 f"or reasoning)")
        completion = row.get("completion")
        if completion is not None and not str(completion).strip():
            raise WherefromError(f"{where}: empty completion (leave it out to have the model write one)")
        query_id = row.get("query_id") or (f"{row['model']}-{int(row['query_idx']):03d}" if "query_idx" in row
                                           else f"{task}-{n - 1:03d}")
        if query_id in seen:
            raise WherefromError(f"{where}: duplicate query_id {query_id!r}")
        seen.add(query_id)
        answer = row.get("answer")
        if answer is None and kind == "reasoning" and completion:
            answer = _number(final_answer(completion))
        specs.append(QuerySpec(str(query_id), task, prompt, str(answer or ""),
                               [str(s) for s in row.get("step_answers") or []], row.get("fact_id"), kind))
        completions.append(completion)
    if not specs:
        raise WherefromError(f"{path}: no queries")
    return specs, completions
