"""A user's corpus: a Hugging Face dataset, or local Parquet/JSONL files, streamed into the corpus schema.

``datasets`` streams it (``streaming=True``), so a corpus larger than memory is read document by
document and written ``docs_per_file`` at a time. Ground-truth columns stay null. Every problem with
the input is a one-line error naming the dataset or file and the field: a missing column, non-UTF-8
text, a duplicate or non-integer id, an empty document (unless ``empty_docs: skip``). Rows count from 1,
as lines do.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import CorpusConfig
from pipeline.core.corpus_reader import PRE_TOKEN
from pipeline.core.errors import WherefromError

_LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
_PRE_TOKEN_OR_SPACE = re.compile(PRE_TOKEN + r"|\s+")  # whitespace kept: chunks rejoin exactly


@dataclass
class ReadReport:
    """What reading the corpus did, recorded beside it in ``_manifest.json``."""

    source: str
    read: int = 0
    written: int = 0
    empty_skipped: int = 0
    chunked: int = 0  # documents split into several
    long_docs: str = "window"
    chunk_tokens: int = 0
    notes: list[str] = field(default_factory=list)


def _local_files(spec: str) -> list[str]:
    return sorted(glob.glob(str(Path(spec).expanduser()))) if not spec.startswith("hf://") else []


def _first_bad_line(files: list[str]) -> str | None:
    """Where a local JSON Lines file first stops being UTF-8 JSON: ``FILE: line N: ...`` (the reader's own
    error names only an offset inside a buffer)."""
    for name in (f for f in files if f.endswith(".jsonl")):
        with open(name, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    return f"{name}: line {n}: not valid UTF-8 (byte {err.start + 1} of the line)"
                try:
                    if line.strip():
                        json.loads(line)
                except json.JSONDecodeError as err:
                    return f"{name}: line {n}: not valid JSON ({err.msg}, column {err.colno})"
    return None


def _first_line(err: BaseException) -> str:
    """An exception's message as one line (some readers raise with none)."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def _open(cfg: CorpusConfig):
    import datasets

    # its JSON reader logs a malformed line at ERROR before raising; our own error names the file and line
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    spec = cfg.dataset
    files = _local_files(spec)
    empty = [f for f in files if Path(f).stat().st_size == 0]
    if empty:
        raise WherefromError(f"{empty[0]}: empty file (no rows)")
    try:
        if files:
            suffixes = {Path(f).suffix for f in files}
            if len(suffixes) != 1 or next(iter(suffixes)) not in _LOCAL_FORMATS:
                raise WherefromError(f"corpus.dataset: {spec}: expected .parquet, .jsonl or .json files, "
                                     f"got {', '.join(sorted(suffixes))}")
            return datasets.load_dataset(_LOCAL_FORMATS[next(iter(suffixes))], data_files=files, split="train",
                                         streaming=True)
        if spec.startswith((".", "/", "~")) or Path(spec).suffix in _LOCAL_FORMATS:
            raise WherefromError(f"corpus.dataset: {spec}: no such file")
        return datasets.load_dataset(spec, cfg.dataset_config, split=cfg.split, streaming=True)
    except WherefromError:
        raise
    except Exception as err:  # datasets raises many types for a bad name, config or split
        raise WherefromError(f"corpus.dataset: {spec}: cannot be opened: {_first_line(err)}") from None


def chunks(text: str, max_tokens: int) -> list[str]:
    """``text`` cut at pre-token boundaries into pieces of at most ``max_tokens`` words, digits and
    punctuation runs (a lower bound on BPE tokens; a piece longer than the model's context is still
    read in windows)."""
    pieces, current, count = [], [], 0
    for m in _PRE_TOKEN_OR_SPACE.finditer(text):
        is_space = m.group().isspace()
        if not is_space and count == max_tokens:
            pieces.append("".join(current).strip())
            current, count = [], 0
        current.append(m.group())
        count += not is_space
    if current and "".join(current).strip():
        pieces.append("".join(current).strip())
    return pieces


def documents(cfg: CorpusConfig, report: ReadReport) -> Iterator[tuple[int, str, str | None]]:
    """``(doc_id, text, source)`` for every document to keep, in dataset order."""
    stream = _open(cfg)
    where = cfg.dataset
    seen: set[int] = set()
    next_id = 0
    try:
        for i, row in enumerate(stream, start=1):
            if cfg.max_docs and report.read >= cfg.max_docs:
                break
            report.read += 1
            if i == 1:
                for column in (cfg.text_column, cfg.id_column, cfg.source_column):
                    if column and column not in row:
                        raise WherefromError(f"{where}: no column {column!r} (columns: {', '.join(row)})")
            text = row[cfg.text_column]
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    raise WherefromError(f"{where}: row {i}: {cfg.text_column} is not valid UTF-8") from None
            if text is not None and not isinstance(text, str):
                raise WherefromError(f"{where}: row {i}: {cfg.text_column} holds "
                                     f"{type(text).__name__} {text!r}, not a string")
            if text is None or not text.strip():
                if cfg.empty_docs == "error":
                    raise WherefromError(f"{where}: row {i}: empty {cfg.text_column} (set corpus.empty_docs: skip)")
                report.empty_skipped += 1
                continue
            source = str(row[cfg.source_column]) if cfg.source_column and row[cfg.source_column] is not None else None
            pieces = chunks(text, cfg.chunk_tokens) if cfg.long_docs == "chunk" else [text]
            report.chunked += len(pieces) > 1
            for piece in pieces:
                if cfg.id_column:
                    doc_id = row[cfg.id_column]
                    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
                        raise WherefromError(f"{where}: row {i}: {cfg.id_column} must be an integer, got {doc_id!r}")
                    if doc_id in seen:
                        raise WherefromError(f"{where}: row {i}: duplicate {cfg.id_column} {doc_id}")
                    seen.add(doc_id)
                else:
                    doc_id, next_id = next_id, next_id + 1
                report.written += 1
                yield doc_id, piece, source
    except WherefromError:
        raise
    except Exception as err:  # bad bytes, or a malformed line, raised inside the datasets reader
        files = _local_files(cfg.dataset)
        located = _first_bad_line(files)
        if located:
            raise WherefromError(located) from None
        if isinstance(err, UnicodeDecodeError):
            raise WherefromError(f"{where}: not valid UTF-8 ({err.reason})") from None
        raise WherefromError(f"{where}: cannot be read: {type(err).__name__}: {_first_line(err)}") from None
