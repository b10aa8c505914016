"""Stage `probe`: ask every query, record the model's own completion, its NLL, and whether it is right.

    wherefrom probe     # reads models/lm/, writes data/queries.parquet, data/segments.parquet, metrics/probe.json

Influence is measured on the model's *own* greedy completion (as in the paper), so this stage fixes
the completions that every later stage explains. A completion ends at the end-of-text token or at a
blank line, where the training documents start their next worked example.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.model import completion_nll, completion_token_nll, greedy_completions, load_model
from pipeline.world.generate import world_for
from pipeline.world.tasks import TASKS
from queries import user as user_queries
from queries.answers import is_correct
from queries.segments import token_segments
from queries.suites import QuerySpec, build_suites


def accuracy_by_task(specs: list[QuerySpec], correct: list[bool | None]) -> dict:
    """Accuracy over the queries that give an answer to check (``n_checked``); a task with none has no accuracy."""
    acc, n, checked = {}, {}, {}
    for task in dict.fromkeys([*TASKS, *(s.task for s in specs)]):
        mine = [c for s, c in zip(specs, correct) if s.task == task]
        hits = [c for c in mine if c is not None]
        n[task], checked[task] = len(mine), len(hits)
        acc[task] = round(sum(hits) / len(hits), 4) if hits else None
    return {"accuracy": acc, "n_queries": n, "n_checked": checked}


def suites(params: Params) -> tuple[list[QuerySpec], list[str | None]]:
    """The queries to ask: the user's file (``queries.file``), or the generated world's suites."""
    cfg = params.queries
    if cfg.file:
        return user_queries.read(cfg.file)
    world = world_for(params, n_unseen=cfg.factual_control)
    counts = {task: getattr(cfg, task) for task in TASKS}
    try:
        specs = build_suites(world, counts, params.seed)
    except ValueError as err:
        raise ParamsError(str(err)) from None
    return specs, [None] * len(specs)


def check_completions(tokenizer, specs: list[QuerySpec], completions: list[str], source: str) -> None:
    """Influence is measured on completion tokens: a completion with none cannot be attributed."""
    for spec, completion in zip(specs, completions):
        if not tokenizer(completion, add_special_tokens=False)["input_ids"]:
            raise WherefromError(f"{source}: query {spec.query_id}: the completion {completion!r} is zero tokens "
                                 f"for this tokenizer")


def segment_table(model, tokenizer, specs: list[QuerySpec], completions: list[str]) -> pa.Table:
    """Every completion token with its answer segment and its NLL: the rules, open to SQL."""
    rows: dict[str, list] = {name: [] for name in schemas.SEGMENTS.names}
    for spec, completion in tqdm(list(zip(specs, completions)), desc="probe: segments", unit="query"):
        enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        segments = token_segments(spec.prompt, completion, spec.answer, offsets)
        nll, runner_up = completion_token_nll(model, tokenizer, spec.prompt, completion)
        for position, (token_id, (start, end), segment, value, other) in enumerate(
                zip(enc["input_ids"], offsets, segments, nll, runner_up)):
            values = (spec.query_id, position, tokenizer.decode([token_id]), start, end, segment, value,
                      tokenizer.decode([other]))
            for name, v in zip(schemas.SEGMENTS.names, values):
                rows[name].append(v)
    return pa.table(rows)


def run(params: Params) -> Path:
    cfg = params.queries
    specs, given = suites(params)  # a bad query file fails here, before the model loads
    model, tokenizer = load_model(params.model.dir)
    prompts = [s.prompt for s in specs]
    missing = [i for i, c in enumerate(given) if c is None]
    generated = greedy_completions(model, tokenizer, [prompts[i] for i in missing], cfg.max_new_tokens,
                                   cfg.batch_size) if missing else []
    completions = list(given)
    for i, text in zip(missing, generated):
        completions[i] = text
    check_completions(tokenizer, specs, completions, cfg.file or "the model's completions")
    nll = completion_nll(model, tokenizer, prompts, completions, cfg.batch_size)
    # a user query without an answer has no correctness: its completion is still explained, but no accuracy counts it
    correct = [is_correct(s.kind, c, s.answer) if s.answer else None for s, c in zip(specs, completions)]
    table = pa.Table.from_pydict({
        "query_id": [s.query_id for s in specs], "task": [s.task for s in specs], "kind": [s.kind for s in specs],
        "prompt": prompts, "completion": completions, "answer": [s.answer for s in specs],
        "step_answers": [s.step_answers for s in specs], "correct": correct, "completion_nll": nll,
        "fact_id": [s.fact_id for s in specs],
    }, schema=schemas.QUERIES)
    write_parquet(table, cfg.out, schemas.QUERIES)
    write_parquet(segment_table(model, tokenizer, specs, completions), cfg.segments, schemas.SEGMENTS)
    metrics = accuracy_by_task(specs, correct)
    write_json(metrics, cfg.metrics)
    shown = [f"{t} {a:.0%}" + (f" ({metrics['n_checked'][t]} of {metrics['n_queries'][t]} with an answer)"
                               if metrics["n_checked"][t] < metrics["n_queries"][t] else "")
             for t, a in metrics["accuracy"].items() if a is not None]
    print("probe: accuracy " + ", ".join(shown) if shown else "probe: no query gives an answer to check: no accuracy")
    return Path(cfg.out)
