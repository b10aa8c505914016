"""A scores directory as one ``[queries, documents]`` matrix of ``score_per_nat``, memory-mapped on disk.

The shards are read one at a time and written into a float32 memmap in a scratch directory, so the
statistics can take a query's row (all documents) or a block of columns without loading the whole
table: 100 queries x 5M documents is a 2 GB file, not 2 GB of RAM. Every shard is checked on the way
in: a missing query, a missing (query, document) pair or a shard from another query set is an error
naming the file.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import WherefromError
from pipeline.core.schemas import SHARD_FILES, WHOLE


@dataclass(frozen=True)
class ScoreMatrix:
    query_ids: list[str]
    doc_ids: np.ndarray  # int64, ascending
    values: np.ndarray  # [len(query_ids), len(doc_ids)] float32, score_per_nat

    def row(self, query_index: int) -> np.ndarray:
        return np.asarray(self.values[query_index], dtype=np.float64)


def shard_files(scores_dir: str | Path) -> list[Path]:
    files = sorted(Path(scores_dir).glob(SHARD_FILES))
    if not files:
        raise WherefromError(f"{scores_dir}: no score shards ({SHARD_FILES}); run the scores stage first")
    return files


def score_rows(scores_dir: str | Path) -> dict[str, list[str]]:
    """The segments scored, ``all`` first, each with its queries in score-table order (every shard has the
    same rows)."""
    table = pq.read_table(shard_files(scores_dir)[0], columns=["query_id", "segment"])
    if table.num_rows == 0:
        raise WherefromError(f"{scores_dir}: an empty score shard; rerun the scores stage")
    rows: dict[str, list[str]] = {}
    for qid, segment in dict.fromkeys(zip(*(table.column(c).to_pylist() for c in ("query_id", "segment")))):
        rows.setdefault(segment, []).append(qid)
    return rows


@contextlib.contextmanager
def open_matrix(scores_dir: str | Path, query_ids: list[str], scratch: str | Path | None = None,
                segment: str = WHOLE) -> Iterator[ScoreMatrix]:
    """The scores in ``scores_dir`` of ``segment`` for ``query_ids`` (in that order), as a memmap deleted on exit."""
    files = shard_files(scores_dir)
    shard_docs = []
    for f in files:  # doc ids first (one column), to size the matrix
        doc_ids = np.unique(pq.read_table(f, columns=["doc_id"]).column("doc_id").to_numpy())
        shard_docs.append(doc_ids)
    doc_ids = np.concatenate(shard_docs)
    all_docs = np.unique(doc_ids)
    if len(all_docs) != len(doc_ids):
        raise WherefromError(f"{scores_dir}: shards overlap (a document is scored in two shards)")
    wanted = pa.array(query_ids, type=pa.string())
    n_q = len(query_ids)
    with tempfile.TemporaryDirectory(prefix="wherefrom-matrix-", dir=scratch) as tmp:
        values = np.lib.format.open_memmap(Path(tmp) / "scores.npy", mode="w+", dtype=np.float32,
                                           shape=(n_q, len(all_docs)))
        for f, docs in zip(files, shard_docs):
            if "segment" not in pq.read_schema(f).names:
                raise WherefromError(f"{f}: scores without a segment column (an older run); rerun the scores stage")
            table = pq.read_table(
                f, columns=["query_id", "doc_id", "score_per_nat"], filters=[("segment", "=", segment)]
            )
            if table.num_rows != n_q * len(docs):
                raise WherefromError(f"{f}: {table.num_rows} rows of segment {segment!r}, expected {n_q} queries x "
                                     f"{len(docs)} documents")
            rows = pc.index_in(table.column("query_id"), value_set=wanted)
            if rows.null_count:
                raise WherefromError(f"{f}: scores for a query not in the queries table (rerun the scores stage)")
            block = np.full((n_q, len(docs)), np.nan, dtype=np.float32)
            block[rows.to_numpy(), np.searchsorted(docs, table.column("doc_id").to_numpy())] = \
                table.column("score_per_nat").to_numpy()
            if np.isnan(block).any():
                raise WherefromError(f"{f}: some (query, document) pairs are missing")
            columns = np.searchsorted(all_docs, docs)
            if columns[-1] - columns[0] + 1 == len(columns):  # the usual case: a contiguous range of doc ids
                values[:, columns[0]:columns[-1] + 1] = block
            else:
                values[:, columns] = block
        values.flush()
        yield ScoreMatrix(list(query_ids), all_docs, values)
        del values


def in_memory(dirs: dict[str, Path], query_ids: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The doc ids (ascending) and each method's ``[queries, docs]`` whole-completion scores per nat, in memory:
    for the tests of what retraining does, whose corpora are small. ``dirs``: method -> its scores directory."""
    out, doc_ids, first = {}, None, None
    for name, path in dirs.items():
        with open_matrix(path, query_ids) as matrix:
            if doc_ids is not None and not np.array_equal(doc_ids, matrix.doc_ids):
                raise WherefromError(f"{path}: scores other documents than {first}; rerun the scores stages")
            doc_ids, first, out[name] = np.asarray(matrix.doc_ids), path, np.array(matrix.values, dtype=np.float64)
    return doc_ids, out
