"""Shards of the score table: planning, checking and writing them.

One shard is a contiguous range of doc ids scored against every query row (``measurements.py``), written to
``shard=NNNNN/part.parquet`` (``schemas.SCORES``). A shard counts as complete only if its file opens, carries this run's
key (a hash of everything that determines the scores) and has exactly queries × documents rows, so
a truncated file, or a shard left by a run with other queries or factors, is recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_path
from pipeline.core.schemas import SCORES, SHARD_FILES, WHOLE, shard_file

RUN_KEY = b"wherefrom.run_key"
COVERAGE = b"wherefrom.coverage"  # {"windows": read, "tokens": whose prediction was attributed}


@dataclass(frozen=True)
class Shard:
    index: int
    doc_ids: tuple[int, ...]

    def path(self, out_dir: Path) -> Path:
        return Path(out_dir) / shard_file(self.index)


def plan(doc_ids: list[int], shard_size: int) -> list[Shard]:
    ordered = sorted(doc_ids)
    return [Shard(i, tuple(ordered[start:start + shard_size]))
            for i, start in enumerate(range(0, len(ordered), shard_size))]


def is_complete(path: Path, run_key: str, n_rows: int) -> bool:
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid):
        return False
    kv = meta.metadata or {}
    return meta.num_rows == n_rows and kv.get(RUN_KEY) == run_key.encode()


def write(path: Path, run_key: str, keys: list[tuple[str, str]], nll: np.ndarray, doc_ids: tuple[int, ...],
          scores: np.ndarray, coverage: dict[str, int] | None = None) -> None:
    """``scores`` is ``[len(keys), n_docs]`` for the (query id, segment) ``keys`` with NLLs ``nll``; rows come
    out in key order, doc ids ascending. ``coverage`` (influence only) records how many windows and
    tokens of the shard's documents were read."""
    n_q, n_d = scores.shape
    query_ids, segments = zip(*keys) if keys else ((), ())
    table = pa.table({
        "query_id": np.repeat(np.asarray(query_ids, dtype=object), n_d),
        "segment": np.repeat(np.asarray(segments, dtype=object), n_d),
        "doc_id": np.tile(np.asarray(doc_ids, dtype=np.int64), n_q),
        "score": scores.astype(np.float32).ravel(),
        "score_per_nat": (scores / nll[:, None]).astype(np.float32).ravel(),
    }, schema=SCORES.with_metadata({RUN_KEY: run_key.encode(), COVERAGE: json.dumps(coverage or {}).encode()}))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def coverage(paths: list[Path]) -> dict[str, int]:
    """Windows and tokens read over the given shards (empty for baselines, which read no tokens)."""
    total: dict[str, int] = {}
    for path in paths:
        for key, value in json.loads((pq.read_metadata(path).metadata or {}).get(COVERAGE, b"{}")).items():
            total[key] = total.get(key, 0) + value
    return total


def whole_scores(out_dir: str | Path, query_ids: list[str], doc_ids: list[int] | np.ndarray) -> np.ndarray:
    """Each query's whole-completion scores in ``out_dir``'s shards (not a variant's folder beside them),
    ``[queries, documents]`` in the given orders; NaN where a pair was not scored."""
    files = [str(f) for f in sorted(Path(out_dir).glob(SHARD_FILES))]
    table = ds.dataset(files, format="parquet").to_table(columns=["query_id", "doc_id", "score"],
                                                         filter=ds.field("segment") == WHOLE)
    q = {qid: i for i, qid in enumerate(query_ids)}
    d = {int(doc): i for i, doc in enumerate(doc_ids)}
    out = np.full((len(query_ids), len(d)), np.nan)
    for qid, doc, score in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "score"))):
        out[q[qid], d[doc]] = score
    return out
