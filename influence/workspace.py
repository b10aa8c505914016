"""The engine on its own: a Hugging Face causal LM, a list of texts and a folder to keep the work in (docs/library.md).

    work = Workspace("attribution", model, tokenizer, texts, context=256)
    work.fit_factors()                                    # EK-FAC over every text
    scores = work.score(prompts, completions)             # [queries, texts], each completion's influence
    work.build_index()                                    # every text's projected gradient, stored once
    answer = work.ask(prompt, completion, top=5)          # the top texts from the index

Each step is the pipeline's own (``influence/curvature``, ``influence/scoring``, ``influence/index``): the same files,
written atomically, keyed and resumable, on Dask. By default one worker runs in this process; ``cluster`` sends the
same tasks to a LocalCluster of several processes or to a running scheduler. The folder holds the model as saved,
the texts as a corpus (``corpus/part-00000.parquet``: ``doc_id`` is a text's position), the factors, the scores and
the index; a second Workspace on the same folder, model and texts reuses whatever is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from influence import shards
from influence.curvature import runner as factor_runner
from influence.curvature.factors import Manifest
from influence.index.asker import Answer, Asker
from influence.index.build import Built, build_index
from influence.scoring.runner import score_corpus
from influence.settings import Cluster, Documents, FactorSettings, IndexSettings, Queries, ScoreSettings
from pipeline.core.atomic import write_parquet
from pipeline.core.errors import WherefromError
from pipeline.core.model import completion_nll

TEXTS = pa.schema([pa.field("doc_id", pa.int64(), nullable=False), pa.field("text", pa.string(), nullable=False)])
QUERIES = pa.schema([pa.field(n, t, nullable=False) for n, t in (
    ("query_id", pa.string()), ("prompt", pa.string()), ("completion", pa.string()), ("completion_nll", pa.float64()))])


class Workspace:
    """A model, its tokenizer and the texts to attribute to, with the engine's work kept under ``folder``."""

    def __init__(self, folder: str | Path, model, tokenizer, texts: Sequence[str], context: int | None = None,
                 cluster: Cluster = Cluster(processes=False), batch_size: int = 16) -> None:
        """``context``: the tokens the model reads at once (a longer text is read in windows of it); default the
        model's ``max_position_embeddings``."""
        if not texts:
            raise WherefromError("Workspace: no texts to attribute to")
        self.folder, self.cluster, self.batch_size = Path(folder), cluster, batch_size
        self.model, self.tokenizer = model.eval(), tokenizer  # eval: the completions' NLL without dropout
        self.model_dir = self.folder / "model"
        model.save_pretrained(self.model_dir)  # the engine's workers load the model from here
        tokenizer.save_pretrained(self.model_dir)
        context = context or model.config.max_position_embeddings
        self.documents = Documents(str(self.folder / "corpus"), context)
        table = pa.table({"doc_id": np.arange(len(texts), dtype=np.int64), "text": list(texts)}, schema=TEXTS)
        write_parquet(table, Path(self.documents.path) / "part-00000.parquet", TEXTS)
        self.n_texts = len(texts)
        self.factors_dir = str(self.folder / "factors")
        self.index_dir = str(self.folder / "index")
        self._asker: Asker | None = None

    def fit_factors(self, settings: FactorSettings | None = None) -> Manifest:
        """Fit EK-FAC (``settings``: its strategy, tracked layers, batch, shards) over every text."""
        settings = settings or FactorSettings(self.factors_dir, batch_size=self.batch_size)
        self.factors_dir = settings.out_dir
        manifest, _ = factor_runner.fit(str(self.model_dir), self.documents, settings, cluster=self.cluster)
        return manifest

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              settings: ScoreSettings | None = None) -> np.ndarray:
        """Each completion's influence (its NLL's, the paper's sign: positive = the text makes the completion more
        likely) of every text: ``[queries, texts]``, float32."""
        queries = self._queries(prompts, completions)
        settings = settings or ScoreSettings(str(self.folder / "scores"), batch_size=self.batch_size)
        score_corpus(self.documents, queries, settings, model_dir=str(self.model_dir), factors_dir=self.factors_dir,
                     index_dir=self.index_dir, cluster=self.cluster)
        scores = shards.whole_scores(settings.out_dir, self._query_ids(len(prompts)), range(self.n_texts))
        return scores.astype(np.float32)

    def build_index(self, settings: IndexSettings | None = None) -> Built:
        """Store every text's projected gradient (``settings``: the projection and its size), for ``ask``."""
        settings = settings or IndexSettings(self.index_dir, batch_size=self.batch_size)
        self.index_dir, self._asker = settings.out_dir, None
        return build_index(str(self.model_dir), self.factors_dir, self.documents, settings, self.cluster)

    def ask(self, prompt: str, completion: str | None = None, top: int = 10) -> Answer:
        """The ``top`` texts by the index's estimate of their influence on ``completion`` (the model's own greedy
        completion when None), best first, each with its ``doc_id``, ``score`` and ``text``."""
        if self._asker is None:
            self._asker = Asker(self.model_dir, self.factors_dir, self.index_dir, self.documents.path,
                                self.documents.context, batch_size=self.batch_size)
        return self._asker.ask(prompt, completion, top)

    @staticmethod
    def _query_ids(n: int) -> list[str]:
        return [f"q{i:06d}" for i in range(n)]

    def _queries(self, prompts: Sequence[str], completions: Sequence[str]) -> Queries:
        """The queries as the scorer reads them, with each completion's NLL under the model (the per-nat divisor)."""
        if len(prompts) != len(completions) or not prompts:
            raise WherefromError(f"score: {len(prompts)} prompts and {len(completions)} completions; give one "
                                 "completion per prompt, at least one")
        nll = completion_nll(self.model, self.tokenizer, list(prompts), list(completions), self.batch_size)
        table = pa.table({"query_id": self._query_ids(len(prompts)), "prompt": list(prompts),
                          "completion": list(completions), "completion_nll": nll}, schema=QUERIES)
        path = self.folder / "queries.parquet"
        write_parquet(table, path, QUERIES)
        return Queries(str(path))

