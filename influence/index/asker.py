"""Ask the gradient index: the model, its factors and the index loaded once, then each question is one
backward pass, one preconditioning and one matrix product (``wherefrom ask``; in a notebook, ``Asker``).

    asker = Asker("models/lm", "results/factors", "results/index", "data/corpus", context=256)
    # in the pipeline: pipeline.runs.asking.asker(load_params("params.yaml"))
    answer = asker.ask("What is the capital of Varnia?")     # the model's own greedy completion
    answer.top                                               # documents, best first, with text and labels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

from influence import data, measurements
from influence.curvature.factors import Manifest, model_fingerprint
from influence.curvature.prepared import prepare
from influence.curvature.tap import GradientTap
from influence.index.search import top_k
from influence.index.store import GradientIndex, project_query_gradients
from pipeline.core.errors import WherefromError
from pipeline.core.model import completion_nll, encode_query, greedy_completions, load_model


@dataclass(frozen=True)
class Answer:
    prompt: str
    completion: str
    nll: float  # of the completion, nats: the divisor of score_per_nat
    top: list[dict]  # doc_id, score, score_per_nat, text, source, fact_ids, procedure; best first


class Asker:
    """The model, factors and gradient index of one run, loaded once."""

    def __init__(self, model_dir: str | Path, factors_dir: str | Path, index_dir: str | Path, corpus_dir: str | Path,
                 context: int, max_new_tokens: int = 128, damping: float | None = None, batch_size: int = 16,
                 client=None) -> None:
        """``client``: a Dask client whose workers hold the index's shards and search them (a corpus too large for
        this machine's memory); without one the whole index is loaded here."""
        self.index_dir, self.client = Path(index_dir), client
        self.index = GradientIndex.load(self.index_dir, with_rows=client is None)
        model, self.tokenizer = load_model(model_dir)
        found = model_fingerprint(model)
        if found != self.index.manifest.fingerprint:
            raise WherefromError(f"{index_dir}: the index was built from another model (fingerprint "
                                 f"{self.index.manifest.fingerprint}, {model_dir} is {found}); rerun the index stage")
        factors = Manifest.load(Path(factors_dir))
        if factors.factors_sha256 != self.index.manifest.factors_sha256:
            raise WherefromError(f"{index_dir}: the index was built with other factors than {factors_dir}'s; "
                                 "rerun the index stage")
        self.ready = prepare(model, Path(factors_dir), damping)
        self.tap = GradientTap(self.ready.modules)
        self.corpus_dir, self.context = str(corpus_dir), context
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def project(self, queries: data.Encoded) -> torch.Tensor:
        """Each query's preconditioned, projected gradient: ``[queries, width]``."""
        return project_query_gradients(self.ready, self.tap, self.index.projection, queries, self.batch_size,
                                       self.tokenizer.pad_token_id)

    def scores(self, rows: measurements.Measurements) -> np.ndarray:
        """Every row's ``[rows, documents]`` estimated influence (documents in ``index.doc_ids`` order), rows as
        the exact scores have them (``all`` the sum of its answer segments where there are segments)."""
        if self.client is not None:
            raise ValueError("every row's score of every document needs the index here: an Asker without a client")
        measured = self.index.scores(self.project(measurements.encoded(self.tokenizer, rows)))
        return rows.expand(measured.double().numpy())

    def complete(self, prompt: str) -> str:
        self.check_prompt(prompt)
        completion = greedy_completions(self.ready.model, self.tokenizer, [prompt], self.max_new_tokens, 1)[0]
        if not completion.strip():
            raise WherefromError("the model's completion of this prompt is empty: give one (--completion TEXT)")
        return completion

    def check_prompt(self, prompt: str, completion: str = "") -> None:
        if not prompt.strip():
            raise WherefromError("empty prompt")
        n = len(encode_query(self.tokenizer, prompt, completion or " ")[0])
        if n > self.context:
            what = "the prompt and completion take" if completion else "the prompt takes"
            raise WherefromError(f"{what} {n} tokens, more than the model's context ({self.context})")

    def ask(self, prompt: str, completion: str | None = None, top: int = 10) -> Answer:
        """The ``top`` documents by estimated influence on ``completion`` (the model's own when None)."""
        completion = self.complete(prompt) if completion is None else completion
        if not completion.strip():
            raise WherefromError("empty completion")
        self.check_prompt(prompt, completion)
        nll = completion_nll(self.ready.model, self.tokenizer, [prompt], [completion], 1)[0]
        projected = self.project(data.queries(self.tokenizer, [prompt], [completion]))
        if self.client is None:
            scores = self.index.scores(projected)[0]
            best = torch.topk(scores, min(top, len(scores))).indices.tolist()
            ids, values = [int(self.index.doc_ids[i]) for i in best], [float(scores[i]) for i in best]
        else:
            values, ids = (row.tolist() for row in top_k(self.client, self.index_dir, projected.numpy(), top))
            values, ids = values[0], [int(d) for d in ids[0]]
        docs = self._documents(ids)
        return Answer(prompt, completion, nll, [{"doc_id": d, "score": v, "score_per_nat": v / nll, **docs[d]}
                                                for d, v in zip(ids, values)])

    def _documents(self, doc_ids: list[int]) -> dict[int, dict]:
        dataset = ds.dataset(self.corpus_dir, format="parquet")
        columns = [c for c in ("doc_id", "text", "source", "fact_ids", "procedure") if c in dataset.schema.names]
        table = dataset.to_table(columns=columns, filter=ds.field("doc_id").isin(doc_ids)).to_pylist()
        return {row.pop("doc_id"): row for row in table}
