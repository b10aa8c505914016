"""Search a gradient index larger than one machine's memory: each Dask worker owns some of its shards (shard i
on worker i mod n, loaded once and kept), scores them against the projected queries and returns its own top
k per query; the client merges those into one top k. On one machine ``GradientIndex.scores`` does the same
in one matrix product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from influence.index.store import IndexManifest
from pipeline.core.schemas import SHARD_FILES

_OWNED: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # (shard file, run key) -> doc ids, stored rows


def _owned(path: str, run_key: str) -> tuple[np.ndarray, np.ndarray]:
    if (path, run_key) not in _OWNED:
        table = pq.read_table(path)
        width = table.schema.field("gradient").type.list_size
        rows = table.column("gradient").combine_chunks().values.to_numpy().reshape(table.num_rows, width)
        _OWNED[path, run_key] = (table.column("doc_id").to_numpy(), rows)
    return _OWNED[path, run_key]


def shard_top(path: str, run_key: str, projected: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One shard's best ``k`` documents per query: ``(scores [queries, k'], doc ids [queries, k'])``, k' ≤ k."""
    doc_ids, rows = _owned(path, run_key)
    scores = projected @ rows.astype(np.float32).T  # widened per question: memory stays the shard's size
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, best, axis=1), doc_ids[best]


def merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The shards' candidates into one top ``k`` per query, best first."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    doc_ids = np.concatenate([d for _, d in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(doc_ids, order, axis=1)


def top_k(client, root: Path, projected: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The index's best ``k`` documents for each projected query (``[queries, width]``, float32), on ``client``'s
    workers: ``(scores, doc ids)``, each ``[queries, k]``, best first."""
    manifest = IndexManifest.load(root)
    files = [str(f.resolve()) for f in sorted(Path(root).glob(SHARD_FILES))]
    workers = sorted(client.scheduler_info()["workers"])
    queries = client.scatter(np.ascontiguousarray(projected, dtype=np.float32), broadcast=True)
    futures = [client.submit(shard_top, path, manifest.run_key, queries, k, workers=[workers[i % len(workers)]],
                             allow_other_workers=False, pure=False) for i, path in enumerate(files)]
    return merge(client.gather(futures), k)
