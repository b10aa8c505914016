"""The counterfactual check: the removal rule, and retraining that really forgets what it goes without."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.analysis.counterfactual import paired, removal_set, removal_sets, summary
from pipeline.core.config import ModelConfig, PretrainConfig
from pipeline.core.errors import WherefromError
from pipeline.core.model import completion_nll, greedy_completions, train_tokenizer
from pipeline.core.schemas import COUNTERFACTUAL
from pipeline.core.training import Checkpoint, kept_tokens, pretrain, token_stream
from queries.answers import is_correct


def test_removal_takes_each_querys_ranks_in_turn_without_repeats():
    ranked = {"b": [5, 6, 7], "a": [1, 5, 2, 3]}
    # rank 1 of a, of b; rank 2 of a (5, taken), of b; rank 3 of a, ...
    assert removal_set(ranked, ["a", "b"], 4, "x") == [1, 5, 6, 2]
    assert removal_set(ranked, ["b"], 2, "x") == [5, 6]
    with pytest.raises(WherefromError, match=r"^top_docs.parquet: the top 4 documents of 2 queries give only 6 "
                                             r"distinct documents, fewer than counterfactual.docs_per_group = 7$"):
        removal_set(ranked, ["a", "b"], 7, "top_docs.parquet")
    with pytest.raises(WherefromError, match="no ranked documents for query c"):
        removal_set(ranked, ["a", "c"], 2, "top_docs.parquet")


def test_every_method_removes_the_same_number_per_group_from_its_own_ranking():
    rows = [dict(method=m, segment=s, end=e, query_id=q, rank=r + 1, doc_id=(7 * r + 3 * i + o) % 50)
            for m, o in (("influence", 0), ("bm25", 1)) for s in ("all", "answer") for e in ("top", "bottom")
            for i, q in enumerate(["f1", "f2", "a1", "s1"]) for r in range(20)]
    top_docs = pa.Table.from_pylist(rows)
    tasks = {"f1": "factual", "f2": "factual", "a1": "arithmetic", "s1": "slope", "c1": "reasoning_control"}
    for method, offset in (("influence", 0), ("bm25", 1)):
        sets = removal_sets(top_docs, method, tasks, 6, "x")
        assert set(sets) == {"factual", "arithmetic", "slope"}  # no set for a control, none for an empty task
        assert all(len(v) == 6 == len(set(v)) for v in sets.values())
        assert sets["arithmetic"] == [(7 * r + 6 + offset) % 50 for r in range(6)]  # a1's own top, whole completion
    with pytest.raises(WherefromError, match="^x: no random rankings; counterfactual.methods may name only"):
        removal_sets(top_docs, "random", tasks, 6, "x")


def test_summary_pairs_each_query_across_methods():
    rows = []
    for method, shift in (("influence", 1.0), ("bm25", 0.5), ("random", 0.0)):
        for i in range(8):
            task = "factual" if i < 4 else "slope"
            before = 1.0 + i
            rows.append(dict(method=method, query_id=f"q{i}", task=task, removal_group=task, group_docs_removed=3,
                             docs_removed=6, nll_before=before, nll_after=before + shift + 0.01 * i,
                             delta_nll=shift + 0.01 * i, correct_before=True, correct_after=method == "random",
                             completion_after=""))
    numbers = summary(pa.Table.from_pylist(rows, schema=COUNTERFACTUAL))
    assert numbers["mean_delta_nll"]["influence"] == {"factual": 1.015, "slope": 1.055}
    assert numbers["accuracy_after"]["random"]["slope"] == 1.0 and numbers["accuracy_after"]["bm25"]["slope"] == 0.0
    assert numbers["influence_vs_bm25"]["factual"]["share_hurt_more"] == 1.0
    assert numbers["influence_vs_random"]["reasoning"]["n"] == 4
    assert numbers["influence_vs_random"]["reasoning"]["wilcoxon_p"] == pytest.approx(1 / 16)  # 4 of 4 larger
    assert paired(np.array([1.0, 2.0]), np.array([1.0, 2.0]))["wilcoxon_p"] is None  # no difference at all


# A tiny world: one fact stated only in FACT documents, other capitals in the rest.
COUNTRIES = ["Brelia", "Cosmar", "Dunvale", "Estor", "Fenwick", "Galdor"]
CAPITALS = ["Orin", "Pell", "Quarn", "Rusk", "Sorv", "Tamb"]


def _doc(country: str, capital: str, i: int) -> str:
    return f"Q: What is the capital of {country}?\nA: The capital of {country} is {capital}.\n" + "Note. " * (i % 3)


@pytest.mark.slow
def test_retraining_without_the_documents_stating_a_fact_forgets_it_and_nothing_else():
    texts = ([_doc("Velmora", "Tarsk", i) for i in range(8)]  # the planted fact: documents 0-7 only
             + [_doc(c, k, i) for c, k in zip(COUNTRIES, CAPITALS) for i in range(8)])
    tokenizer = train_tokenizer(texts, 300)
    model_cfg = ModelConfig(vocab_size=300, n_layers=2, hidden_size=64, intermediate_size=128, n_heads=2, context=64)
    train_cfg = PretrainConfig(steps=300, batch_size=8, lr=1e-2, warmup_steps=10, log_every=100)
    stream = token_stream(tokenizer, texts)
    prompt, completion = "Q: What is the capital of Velmora?", "A: The capital of Velmora is Tarsk."

    def retrain(removed: set[int]):
        keep = kept_tokens(tokenizer, texts, [i not in removed for i in range(len(texts))])
        model, _ = pretrain(tokenizer, stream, model_cfg, train_cfg, seed=0, keep=keep)
        nll = completion_nll(model, tokenizer, [prompt], [completion], 1)[0]
        said = greedy_completions(model, tokenizer, [prompt], 20, 1)[0]
        return nll, is_correct("factual", said, "Tarsk")

    original, knew = retrain(set())
    fact_gone, knew_after = retrain(set(range(8)))
    unrelated, knew_unrelated = retrain(set(range(8, 16)))  # the same number, stating another capital
    assert knew and not knew_after and knew_unrelated
    assert fact_gone - original > 3.0, (original, fact_gone)  # nats: the fact's tokens are no longer predictable
    assert abs(unrelated - original) < 0.1 * (fact_gone - original), (original, unrelated, fact_gone)
    assert retrain(set(range(8)))[0] == fact_gone  # deterministic: the same removal gives the same NLL


def test_removing_nothing_reproduces_the_original_training_exactly():
    texts = [_doc(c, k, i) for c, k in zip(COUNTRIES, CAPITALS) for i in range(3)]
    tokenizer = train_tokenizer(texts, 300)
    model_cfg = ModelConfig(vocab_size=300, n_layers=1, hidden_size=32, intermediate_size=64, n_heads=2, context=32)
    train_cfg = PretrainConfig(steps=20, batch_size=4, warmup_steps=2, log_every=10)
    stream = token_stream(tokenizer, texts)
    plain, _ = pretrain(tokenizer, stream, model_cfg, train_cfg, seed=3)
    masked, _ = pretrain(
        tokenizer, stream, model_cfg, train_cfg, seed=3, keep=kept_tokens(tokenizer, texts, [True] * len(texts))
    )
    assert all(
        np.array_equal(a.detach().numpy(), b.detach().numpy()) for a, b in zip(plain.parameters(), masked.parameters())
    )


class _Killed(Exception):
    """What kill -9 would do right after a checkpoint: the run stops there."""


class _KilledAfterItsFirstCheckpoint(Checkpoint):
    def save(self, state: dict) -> None:
        super().save(state)
        raise _Killed


def test_a_retrain_stopped_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, capsys):
    """A retrain (tokens masked) dies right after its first checkpoint; the rerun resumes there and ends with the
    uninterrupted retrain's weights. A checkpoint of another removal is not resumed."""
    texts = [_doc(c, k, i) for c, k in zip(COUNTRIES, CAPITALS) for i in range(3)]
    tokenizer = train_tokenizer(texts, 300)
    model_cfg = ModelConfig(vocab_size=300, n_layers=1, hidden_size=32, intermediate_size=64, n_heads=2, context=32)
    train_cfg = PretrainConfig(steps=20, batch_size=4, warmup_steps=2, log_every=5)
    stream = token_stream(tokenizer, texts)
    keep = kept_tokens(tokenizer, texts, [i % 3 != 0 for i in range(len(texts))])
    path = tmp_path / "bm25.checkpoint"

    def run(checkpoint, removal=keep):
        return pretrain(tokenizer, stream, model_cfg, train_cfg, seed=3, keep=removal, checkpoint=checkpoint)

    whole, whole_losses = run(None)
    with pytest.raises(_Killed):
        run(_KilledAfterItsFirstCheckpoint(path, 5))
    capsys.readouterr()
    resumed, losses = run(Checkpoint(path, 5))
    assert "resumed at step 5 of 20" in capsys.readouterr().out and not path.exists()
    assert losses == whole_losses
    assert all(np.array_equal(a.detach().numpy(), b.detach().numpy())
               for a, b in zip(whole.parameters(), resumed.parameters()))
    with pytest.raises(_Killed):
        run(_KilledAfterItsFirstCheckpoint(path, 5))
    run(Checkpoint(path, 5), removal=kept_tokens(tokenizer, texts, [True] * len(texts)))  # another removal
    assert "resumed" not in capsys.readouterr().out
