"""Token batches for influence: documents (every token counts) and queries (completion tokens only).

Sequences are right-padded; ``attention_mask`` and ``labels = -100`` keep the padding out of every
loss, gradient and covariance, so a document scores the same alone or beside a longer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch.utils.data import DataLoader, Dataset

from pipeline.core.model import encode_query, pad_batch


class Encoded(Dataset):
    """Token ids with the index where counting starts (0 for documents, the completion for queries)."""

    def __init__(self, items: Sequence[tuple[list[int], int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.items[i]


def documents(tokenizer, texts: Sequence[str], max_tokens: int) -> Encoded:
    """Documents truncated to ``max_tokens`` (the model's training window)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    return Encoded([(x, 0) for x in ids])


def queries(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> Encoded:
    return Encoded([encode_query(tokenizer, p, c) for p, c in zip(prompts, completions)])


def loader(data: Encoded, batch_size: int, pad_id: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=partial(pad_batch, pad_id=pad_id))
