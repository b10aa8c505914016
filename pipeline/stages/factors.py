"""Stage `factors`: fit the curvature (EK-FAC by default) of the model on a sample of the corpus.

    wherefrom factors           # reads models/lm/ and data/corpus/, writes results/factors/

The factors (covariances, eigendecomposition, corrected eigenvalues) are kronfluence's files. With
``influence.fitter: wherefrom`` (EK-FAC, K-FAC) both passes run as Dask tasks over document shards, on
the cluster the scores use, and a killed run resumes at its first unfinished shard
(``influence/curvature/runner.py``); kronfluence's own fitter runs in this process. The directory also
holds a manifest naming the model it belongs to, so scores never mix factors and models.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from influence import data
from influence.curvature import factors, runner
from pipeline.core.atomic import atomic_dir
from pipeline.core.config import Params
from pipeline.core.corpus_reader import read_doc_ids, read_texts
from pipeline.core.model import load_model
from pipeline.runs import settings


def run(params: Params) -> Path:
    cfg = params.influence
    doc_ids = read_doc_ids(params.corpus.out_dir)
    if 0 < cfg.factor_docs < len(doc_ids):
        doc_ids = random.Random(f"factors-{params.seed}").sample(doc_ids, cfg.factor_docs)
    out = Path(cfg.factors_dir)
    start, steps = time.perf_counter(), {}
    documents = settings.documents(params)
    if cfg.fitter == "wherefrom" and cfg.strategy in factors.NATIVE_STRATEGIES:
        manifest, tokens = runner.fit(params.model.dir, documents, settings.factor_settings(params), doc_ids,
                                      settings.cluster(params), steps)
        how = f"{params.dask.scheduler or f'{params.dask.workers} local'} Dask worker(s)"
    else:
        model, tokenizer = load_model(params.model.dir)
        docs = data.documents(tokenizer, read_texts(documents.path, doc_ids), documents.context,
                              whole=documents.whole).by_length()
        with atomic_dir(out) as tmp:
            manifest = factors.fit(model, tokenizer.pad_token_id, docs, cfg.strategy, cfg.tracked, cfg.batch_size,
                                   tmp, seed=params.seed, fitter=cfg.fitter, seconds=steps)
        tokens, how = data.n_targets(docs), "this process"
    seconds = time.perf_counter() - start
    print(
        f"factors: {cfg.strategy} on {len(manifest.tracked)} modules ({cfg.tracked}) from {len(doc_ids)} documents "
        f"({tokens:,} tokens) in {seconds:.0f}s ({len(doc_ids) / seconds:.0f} docs/s; {cfg.fitter} on {how}: "
        + ", ".join(f"{step} {t:.0f}s" for step, t in steps.items()) + f") -> {out}/"
    )
    return out
