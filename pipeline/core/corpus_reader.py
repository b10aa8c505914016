"""Reading the corpus Parquet (``schemas.CORPUS``), and the tokenizer-independent length of a text.

Every stage and worker reads documents through here, so the corpus's layout (a directory of Parquet
files, ``_``-prefixed side files ignored) is known in one place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

# Words, single digits and punctuation runs: a tokenizer-independent length (every BPE token of a
# digit-split byte-level tokenizer lies within one of these, so it is a lower bound on its count).
PRE_TOKEN = r"[^\W\d_]+|\d|[^\w\s]+|_"
_PRE_TOKEN = re.compile(PRE_TOKEN)

MANIFEST = "_manifest.json"  # how a user corpus was read (the leading "_" keeps Parquet readers off it)


def n_pre_tokens(text: str) -> int:
    return len(_PRE_TOKEN.findall(text))


def read_texts(corpus_dir: str, doc_ids: Sequence[int] | None = None) -> list[str]:
    """Every document's text in file order, or the texts of ``doc_ids`` in that order."""
    dataset = ds.dataset(corpus_dir, format="parquet")
    if doc_ids is None:
        return dataset.to_table(columns=["text"]).column("text").to_pylist()
    table = dataset.to_table(columns=["doc_id", "text"], filter=pc.field("doc_id").isin(list(doc_ids)))
    by_id = dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))
    return [by_id[i] for i in doc_ids]


def corpus_files(corpus_dir: str | Path) -> list[Path]:
    """The corpus's Parquet files, in name order (side files, ``_``-prefixed, left out)."""
    return sorted(p for p in Path(corpus_dir).glob("*.parquet") if not p.name.startswith("_"))


def content_hash(corpus_dir: str | Path) -> str:
    """A hash of every corpus file's bytes: a document edited under the same id changes it."""
    h = hashlib.sha256()
    for path in corpus_files(corpus_dir):
        h.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_doc_ids(corpus_dir: str) -> list[int]:
    return ds.dataset(corpus_dir, format="parquet").to_table(columns=["doc_id"]).column("doc_id").to_pylist()
