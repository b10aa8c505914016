"""The run's ``Asker``: its model, factors and gradient index, loaded once (``wherefrom ask``, the index benchmark)."""

from __future__ import annotations

from influence.index.asker import Asker
from pipeline.core.config import Params


def asker(params: Params, client=None) -> Asker:
    """``client``: a Dask client whose workers hold the index's shards and search them."""
    return Asker(params.model.dir, params.influence.factors_dir, params.index.out_dir, params.corpus.out_dir,
                 params.model.context, params.queries.max_new_tokens, params.influence.damping,
                 params.index.batch_size, client)
