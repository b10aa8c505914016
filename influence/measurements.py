"""What is measured on each query: its whole completion, and each answer segment's tokens alone.

One row of the score table per (query, segment, document). A query's rows are ``all`` (the completion's
NLL, the paper's measurement) and then each answer segment it has, in ``ANSWER_SEGMENTS`` order; a
segment's measurement is the NLL of its tokens alone, so the segments' scores add up to ``all``'s (the
NLL is a sum over tokens, and a score is linear in the measurement's gradient). Each row's NLL, the
divisor of ``score_per_nat``, is the probe's: ``completion_nll`` for ``all``, the sum of the segment's
token NLLs (``data/segments.parquet``) for a segment.

With segments, influence measures only the segment rows and sums them into ``all``: every completion
token is in exactly one segment, so the sum is the whole completion's score, and it saves a quarter of
the query gradients the scorer holds and contracts with every document (``tests/test_influence.py``
checks the identity against the whole completion measured on its own).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from influence import data
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import ANSWER_SEGMENTS, WHOLE


@dataclass(frozen=True)
class Measurements:
    """The score table's query rows, in order: ``keys[i] = (query_id, segment)`` and its NLL ``nll[i]``."""

    keys: list[tuple[str, str]]
    nll: np.ndarray  # float64, nats
    prompts: list[str]
    completions: list[str]
    token_segments: dict[str, list[str]]  # query id -> the segment of each completion token (empty: no segments)
    segment_text: dict[tuple[str, str], str]  # (query id, segment) -> its characters, runs joined by a space

    def __len__(self) -> int:
        return len(self.keys)

    def query_index(self) -> dict[str, int]:
        """Query id -> its position in ``prompts`` and ``completions``."""
        return {qid: i for i, qid in enumerate(dict.fromkeys(qid for qid, _ in self.keys))}

    @property
    def measured(self) -> list[int]:
        """The rows the model measures: the segments where there are any (``all`` is their sum), else ``all``."""
        if not self.token_segments:
            return list(range(len(self.keys)))
        return [i for i, (_, segment) in enumerate(self.keys) if segment != WHOLE]

    def expand(self, measured: np.ndarray) -> np.ndarray:
        """``[len(measured), docs]`` scores into every row's ``[len(keys), docs]``, ``all`` as its segments' sum."""
        rows = self.measured
        if len(rows) == len(self.keys):
            return measured
        out = np.zeros((len(self.keys), measured.shape[1]), dtype=np.float64)
        out[rows] = measured
        whole = {qid: i for i, (qid, segment) in enumerate(self.keys) if segment == WHOLE}
        for i, (qid, _) in zip(rows, (self.keys[r] for r in rows)):
            out[whole[qid]] += out[i]
        return out


def read(queries_path: str, segments_path: str | None) -> Measurements:
    """The rows to score: ``all`` for every query, and its segments when ``segments_path`` is given."""
    queries = pq.read_table(queries_path, columns=["query_id", "prompt", "completion", "completion_nll"]).to_pydict()
    tokens: dict[str, list[tuple]] = defaultdict(list)
    if segments_path is not None:
        if not Path(segments_path).is_file():
            raise WherefromError(f"{segments_path}: no answer segments here; run the probe stage first")
        seg = pq.read_table(segments_path, columns=["query_id", "position", "token", "segment", "nll"]).to_pydict()
        for qid, position, token, segment, nll in zip(*seg.values()):
            tokens[qid].append((position, token, segment, nll))
    keys, nll, labels, text = [], [], {}, {}
    for qid, completion_nll in zip(queries["query_id"], queries["completion_nll"]):
        keys.append((qid, WHOLE))
        nll.append(completion_nll)
        if segments_path is None:
            continue
        rows = sorted(tokens.get(qid, []))
        if [r[0] for r in rows] != list(range(len(rows))) or not rows:
            raise WherefromError(f"{segments_path}: query {qid} has no complete token list; rerun the probe stage")
        labels[qid] = [r[2] for r in rows]
        for segment in ANSWER_SEGMENTS:
            mine = [r for r in rows if r[2] == segment]
            if mine:
                keys.append((qid, segment))
                nll.append(sum(r[3] for r in mine))
                text[qid, segment] = _runs(mine)
    return Measurements(keys, np.asarray(nll, dtype=np.float64), queries["prompt"], queries["completion"], labels, text)


def _runs(rows: list[tuple]) -> str:
    """A segment's text: consecutive tokens joined as written, separate runs by a space (``21`` stays one number)."""
    out, previous = "", None
    for position, token, _, _ in rows:
        out += token if previous is not None and position == previous + 1 else (" " if out else "") + token
        previous = position
    return out


def encoded(tokenizer, m: Measurements) -> data.Encoded:
    """The measured rows as model inputs, in ``measured`` order: whole completions, or each query's segments."""
    if not m.token_segments:
        return data.queries(tokenizer, m.prompts, m.completions)
    items = []
    for qid, i in m.query_index().items():
        segments = [segment for q, segment in m.keys if q == qid and segment != WHOLE]
        items += data.segment_queries(tokenizer, [m.prompts[i]], [m.completions[i]], [m.token_segments[qid]],
                                      segments).items
    return data.Encoded(items)
