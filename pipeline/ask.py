"""`wherefrom ask`: a new question against the gradient index, in seconds instead of a pass over the corpus.

    wherefrom ask "What is the capital of Varnia?"                 # the model's own greedy completion
    wherefrom ask "PROMPT" --completion "TEXT" --top 5
    wherefrom ask --queries my_queries.jsonl --out my_scores.parquet  # a whole suite, in the scores schema

Loading torch, the model and the index takes seconds; to ask many questions, keep them loaded
(``pipeline.runs.asking.asker(params)`` in a notebook).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.core.config import Params
from pipeline.core.errors import WherefromError

TEXT_SHOWN = 110  # characters of each document's text on its line


def add_parser(sub) -> None:
    ask = sub.add_parser("ask", help="the documents that most influence a completion, from the gradient index",
                         description="Rank the corpus by estimated influence on a completion, from the gradient "
                                     "index (wherefrom index builds it). Without --completion, the model's own "
                                     "greedy completion is explained.")
    ask.add_argument("prompt", nargs="?", help="the question")
    ask.add_argument("--completion", help="the answer to explain (default: the model's greedy completion)")
    ask.add_argument("--top", type=int, help="documents shown (default: index.top)")
    ask.add_argument("--queries", metavar="FILE", help="a query file (.jsonl, .json or .parquet; the README's format) "
                                                       "instead of one prompt")
    ask.add_argument("--out", metavar="FILE.parquet", help="with --queries: where the scores go (the scores schema)")
    ask.add_argument("--dask", action="store_true", help="search on Dask, each worker holding some of the index's "
                                                         "shards (dask.scheduler, or a LocalCluster of dask.workers)")
    ask.add_argument("--params", default="params.yaml",
                     help="parameters file (default: params.yaml, found from anywhere in the checkout)")


def _check_args(args: argparse.Namespace) -> None:
    if args.queries and args.prompt is not None:
        raise WherefromError("ask: give a prompt or --queries FILE, not both")
    if args.queries and not args.out:
        raise WherefromError("ask: --queries needs --out FILE.parquet")
    if args.out and not args.queries:
        raise WherefromError("ask: --out goes with --queries FILE")
    if args.out and Path(args.out).suffix != ".parquet":
        raise WherefromError(f"ask: --out {args.out}: the scores are written as .parquet")
    if not args.queries and args.prompt is None:
        raise WherefromError('ask: give a prompt (wherefrom ask "QUESTION") or --queries FILE')
    if args.prompt is not None and not args.prompt.strip():
        raise WherefromError("ask: empty prompt")
    if args.dask and args.queries:
        raise WherefromError("ask: --dask finds one prompt's top documents; --queries scores every document here")
    if args.top is not None and args.top <= 0:
        raise WherefromError(f"ask: --top {args.top}: must be positive")


def run(params: Params, args: argparse.Namespace) -> int:
    _check_args(args)
    import transformers  # torch, transformers and kronfluence: after the arguments are checked

    from pipeline.core.model import set_threads
    from pipeline.runs import asking, settings

    transformers.logging.disable_progress_bar()
    set_threads(params.runtime.threads)
    if not args.dask:
        asker = asking.asker(params)
        return _suite(asker, args.queries, args.out) if args.queries else _show(asker, args, params)
    from influence.cluster import dask_client

    with dask_client(settings.cluster(params)) as client:
        return _show(asking.asker(params, client), args, params)


def _show(asker, args: argparse.Namespace, params: Params) -> int:
    answer = asker.ask(args.prompt, args.completion, args.top or params.index.top)
    print(f"prompt: {answer.prompt}\ncompletion: {answer.completion}\nNLL: {answer.nll:.2f} nats\n")
    print(f"{'rank':>4}  {'doc_id':>8}  {'score':>10}  {'per nat':>10}  {'source':<15}  labels / text")
    for rank, doc in enumerate(answer.top, start=1):
        labels = ", ".join([*(doc.get("fact_ids") or []), *([doc["procedure"]] if doc.get("procedure") else [])])
        text = " ".join(doc["text"].split())
        text = text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 3] + "..."
        print(f"{rank:>4}  {doc['doc_id']:>8}  {doc['score']:>10.4g}  {doc['score_per_nat']:>10.4g}  "
              f"{doc.get('source') or '':<15}  {('[' + labels + '] ') if labels else ''}{text}")
    return 0


def _suite(asker, path: str, out: str) -> int:
    """Every query of a file, scored against the whole corpus, written in the scores schema (segment ``all``)."""
    from influence import measurements, shards
    from pipeline.core.model import completion_nll
    from pipeline.core.schemas import WHOLE
    from queries import user

    specs, given = user.read(path)
    prompts = [s.prompt for s in specs]
    completions = [c if c is not None else asker.complete(p) for p, c in zip(prompts, given)]
    for spec, completion in zip(specs, completions):
        asker.check_prompt(spec.prompt, completion)
    nll = np.asarray(completion_nll(asker.ready.model, asker.tokenizer, prompts, completions, asker.batch_size))
    rows = measurements.Measurements([(s.query_id, WHOLE) for s in specs], nll, prompts, completions, {}, {})
    scores = asker.scores(rows)
    shards.write(Path(out), f"index-{asker.index.manifest.run_key}", rows.keys, nll,
                 tuple(int(d) for d in asker.index.doc_ids), scores)
    print(f"ask: {len(specs)} queries x {len(asker.index.doc_ids)} documents -> {out}")
    return 0
