"""A user's query file (JSONL, a JSON array, or Parquet): the paper's own queries, or new ones, instead of the suites.

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
from typing import Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.core.errors import WherefromError
from pipeline.world.tasks import TASK_KIND
from queries.answers import final_answer
from queries.suites import QuerySpec

# The published query set's category names -> ours.
TASK_ALIASES = {"arithmetic_two_step": "arithmetic", "linear_equation": "linear"}


class UserQuery(BaseModel):
    """One row of a query file, typed: a number where text belongs (``completion: 42``) or text where a
    list belongs (``step_answers: "4236"``) is an error, not a silent conversion."""

    model_config = ConfigDict(extra="allow", strict=True)  # the published set carries extra fields

    prompt: str
    task: str | None = None
    category_inferred: str | None = None
    kind: Literal["factual", "reasoning"] | None = None
    completion: str | None = None
    answer: str | int | float | None = None
    step_answers: list[str | int | float] | None = None
    fact_id: str | None = None
    query_id: str | int | None = None
    model: str | None = None
    query_idx: int | None = None


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line; bad UTF-8 is named by its line and column."""
    out = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise WherefromError(f"{path}: line {n}: not valid UTF-8 (byte {err.start + 1} of the line)") from None
        if line.strip():
            out.append((n, line))
    return out


def _rows(path: Path) -> list[tuple[str, object]]:
    """(where, row) for every row of the file: JSONL one object per line, .json one array of objects, Parquet."""
    if not path.is_file():
        raise WherefromError(f"queries.file: {path}: no such file")
    if path.suffix == ".parquet":
        return [(f"row {n}", row) for n, row in enumerate(pq.read_table(path).to_pylist(), start=1)]
    if path.suffix not in (".jsonl", ".json"):
        raise WherefromError(f"queries.file: {path}: expected a .jsonl, .json or .parquet file")
    lines = _lines(path)
    try:
        if path.suffix == ".json":
            rows = json.loads("\n".join(line for _, line in lines))
            if not isinstance(rows, list):
                raise WherefromError(f"{path}: expected a JSON array of query objects, got {type(rows).__name__}")
            return [(f"query {n}", row) for n, row in enumerate(rows, start=1)]
        out = []
        for n, line in lines:
            out.append((f"line {n}", json.loads(line)))
        return out
    except json.JSONDecodeError as err:
        where = f"line {n}" if path.suffix == ".jsonl" else f"line {err.lineno}"
        raise WherefromError(f"{path}: {where}: not valid JSON ({err.msg})") from None


def _typed(path: Path, where: str, row: object) -> UserQuery:
    if not isinstance(row, dict):
        raise WherefromError(f"{path}: {where}: expected a JSON object (one query), got {type(row).__name__}")
    try:
        return UserQuery.model_validate(row)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(x) for x in e["loc"]) or "row"
        raise WherefromError(f"{path}: {where}: {field}: {e['msg']} (got {e.get('input')!r})") from None


def _number(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


def read(path: str | Path) -> tuple[list[QuerySpec], list[str | None]]:
    """The file's queries, and each one's given completion (None where the model must write it)."""
    path = Path(path)
    specs, completions, seen = [], [], set()
    for n, (where, raw) in enumerate(_rows(path), start=1):
        row = _typed(path, where, raw)
        where = f"{path}: {where}"
        if not row.prompt.strip():
            raise WherefromError(f"{where}: empty prompt")
        task = TASK_ALIASES.get(row.task or row.category_inferred, row.task or row.category_inferred)
        kind = row.kind or TASK_KIND.get(task)
        if not task or kind not in ("factual", "reasoning"):
            raise WherefromError(f"{where}: task {task!r} is not one of {', '.join(TASK_KIND)} (or give kind: factual "
                                 f"or reasoning)")
        completion = row.completion
        if completion is not None and not completion.strip():
            raise WherefromError(f"{where}: empty completion (leave it out to have the model write one)")
        query_id = row.query_id if row.query_id is not None else (
            f"{row.model}-{row.query_idx:03d}" if row.query_idx is not None else f"{task}-{n - 1:03d}")
        if str(query_id) in seen:
            raise WherefromError(f"{where}: duplicate query_id {query_id!r}")
        seen.add(str(query_id))
        answer = _number(row.answer) if isinstance(row.answer, (int, float)) else row.answer
        if answer is None and kind == "reasoning" and completion:
            answer = _number(final_answer(completion))
        specs.append(QuerySpec(str(query_id), task, row.prompt, str(answer or ""),
                               [_number(s) if isinstance(s, (int, float)) else s for s in row.step_answers or []],
                               row.fact_id, kind))
        completions.append(completion)
    if not specs:
        raise WherefromError(f"{path}: no queries")
    return specs, completions
