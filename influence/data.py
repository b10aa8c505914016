"""Token batches for influence: documents (every token counts) and queries (completion tokens only).

A document longer than the model's context is read in consecutive windows of ``context`` tokens, each
starting on the previous window's last token. With the loss's one-token shift, every token after a
document's first is then predicted exactly once, so a document's summed loss, and with it its
gradient and its influence, is the exact sum over its windows. Later windows do not start with the
end-of-text token: pretraining drew its windows at random offsets of one token stream, so the model
was trained on windows that start mid-document.

Sequences are right-padded; ``attention_mask`` and ``labels = -100`` keep the padding out of every
loss, gradient and covariance, so a document scores the same alone or beside a longer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.core.model import encode_query, pad_batch


class Encoded(Dataset):
    """Token ids with the index where counting starts (0 for documents, the completion for queries); a
    segment query adds which of the tokens from there count (see ``pad_batch``).

    ``owners[i]`` is the document that item ``i`` is a window of (items are documents when it is None).
    """

    def __init__(self, items: Sequence[tuple], owners: Sequence[int] | None = None) -> None:
        self.items = list(items)
        self.owners = list(owners) if owners is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return self.items[i]

    @property
    def n_docs(self) -> int:
        return len(self.items) if self.owners is None else (max(self.owners, default=-1) + 1)

    def by_length(self) -> Encoded:
        """The same items, shortest first (stable), each still owned by its document.

        Batches are padded to their longest item, and a corpus mixes 20-token facts with 256-token
        windows: in corpus order the demo's batches are 2.9x their real tokens, sorted 1.01x. Every
        per-item quantity (a window's loss, gradient, score) is unchanged by the order, and
        ``per_document`` sums the items back into document order.
        """
        order = sorted(range(len(self.items)), key=lambda i: len(self.items[i][0]))
        owners = self.owners if self.owners is not None else range(len(self.items))
        return Encoded([self.items[i] for i in order], [owners[i] for i in order])

    def per_document(self, scores: torch.Tensor) -> torch.Tensor:
        """``[queries, items]`` scores summed into ``[queries, documents]`` (in float64, then float32)."""
        if self.owners is None:
            return scores
        out = torch.zeros(scores.shape[0], self.n_docs, dtype=torch.float64)
        return out.index_add_(1, torch.tensor(self.owners), scores.double()).float()


def windows(ids: list[int], context: int) -> list[list[int]]:
    """Consecutive windows of at most ``context`` tokens, each starting on the previous one's last token."""
    if len(ids) <= context:
        return [ids]
    return [ids[start:start + context] for start in range(0, len(ids) - 1, context - 1)]


def documents(tokenizer, texts: Sequence[str], context: int, whole: bool = True) -> Encoded:
    """Every token of every document, in windows (``whole``), or each document's first ``context`` tokens."""
    if not whole:
        return Encoded([(x, 0) for x in tokenizer(list(texts), truncation=True, max_length=context)["input_ids"]])
    items, owners = [], []
    for doc, ids in enumerate(tokenizer(list(texts))["input_ids"]):
        for window in windows(ids, context):
            items.append((window, 0))
            owners.append(doc)
    return Encoded(items, owners)


def n_targets(docs: Encoded) -> int:
    """Tokens whose prediction the documents' loss counts: all but the first of each item."""
    return sum(max(len(ids) - 1, 0) for ids, _ in docs.items)


def queries(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> Encoded:
    return Encoded([encode_query(tokenizer, p, c) for p, c in zip(prompts, completions)])


def segment_queries(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                    token_segments: Sequence[Sequence[str]], segments: Sequence[str]) -> Encoded:
    """One query per (query, segment), query-major: the measurement is the NLL of that segment's tokens
    alone, so a query's segments add up to its whole completion (the NLL is a sum over tokens).
    ``token_segments[i]`` names the segment of each completion token of query ``i``."""
    items = []
    for prompt, completion, labels in zip(prompts, completions, token_segments):
        ids, start = encode_query(tokenizer, prompt, completion)
        if len(labels) != len(ids) - start:
            raise ValueError(f"{len(labels)} segment labels for {len(ids) - start} completion tokens")
        items += [(ids, start, [label == segment for label in labels]) for segment in segments]
    return Encoded(items)


def loader(data: Encoded, batch_size: int, pad_id: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=partial(pad_batch, pad_id=pad_id))
