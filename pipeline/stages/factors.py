"""Stage `factors`: fit the curvature (EK-FAC by default) of the model on a sample of the corpus.

    wherefrom factors           # reads models/lm/ and data/corpus/, writes results/factors/

The factors (covariances, eigendecomposition, corrected eigenvalues) are kronfluence's files, fitted by
wherefrom's faster passes or by kronfluence itself (``influence.fitter``); the directory also holds a
manifest naming the model it belongs to, so scores never mix factors and models.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from influence import curvature, data
from pipeline.core.atomic import atomic_dir
from pipeline.core.config import Params
from pipeline.core.corpus_reader import read_texts
from pipeline.core.model import load_model


def run(params: Params) -> Path:
    cfg = params.influence
    model, tokenizer = load_model(params.model.dir)
    texts = read_texts(params.corpus.out_dir)
    if 0 < cfg.factor_docs < len(texts):
        texts = random.Random(f"factors-{params.seed}").sample(texts, cfg.factor_docs)
    whole = params.corpus.long_docs != "truncate"
    docs = data.documents(tokenizer, texts, params.model.context, whole=whole).by_length()
    out = Path(cfg.factors_dir)
    start, steps = time.perf_counter(), {}
    with atomic_dir(out) as tmp:
        manifest = curvature.fit(model, tokenizer.pad_token_id, docs, cfg.strategy, cfg.tracked, cfg.batch_size, tmp,
                                 seed=params.seed, fitter=cfg.fitter, seconds=steps)
    seconds = time.perf_counter() - start
    print(
        f"factors: {cfg.strategy} on {len(manifest.tracked)} modules ({cfg.tracked}) from {len(texts)} documents "
        f"({len(docs)} windows, {data.n_targets(docs):,} tokens) in {seconds:.0f}s ({len(texts) / seconds:.0f} docs/s; "
        f"{cfg.fitter}: " + ", ".join(f"{step} {t:.0f}s" for step, t in steps.items()) + f") -> {out}/"
    )
    return out
