"""A user's model, corpus and queries: tiny random-init Llama, GPT-NeoX and GPT-2 models saved to disk,
a local Parquet corpus and a JSONL query file, through factors -> scores -> analyze. No network."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO, make_params
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from pipeline.core.errors import WherefromError
from pipeline.core.model import load_model, train_tokenizer
from pipeline.stages import analyze, baselines, corpus, factors, pretrain, probe, report, scores

SHARED_QUERIES = Path(__file__).resolve().parents[2] / "shared/reference/ruis2024_queries.jsonl"
TEXTS = [
    f"The capital of Land{i} is City{i}. Step: {i} + 3 = {i + 3}, then {i + 3} * 2 = {2 * i + 6}." for i in range(30)
]


def _save(arch: str, root: Path) -> Path:
    tokenizer = train_tokenizer(TEXTS, 300)
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=256, **common))
    elif arch == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, max_position_embeddings=256, **common))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common))
    path = root / arch
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _corpus(path: Path) -> Path:
    rows = [{"id": 100 + i, "text": t, "src": "wiki" if i % 2 else "code"} for i, t in enumerate(TEXTS)]
    rows.append({"id": 999, "text": "   ", "src": "wiki"})  # empty: skipped and counted
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


QUERIES = [
    {"prompt": "What is the capital of Land3?", "completion": "The capital of Land3 is City3.", "task": "factual",
     "answer": "City3"},
    {"prompt": "What is the capital of Land7?", "completion": "City7.", "task": "factual", "answer": "City7"},
    {"prompt": "Calculate: (4 + 3) * 2", "completion": "4 + 3 = 7\n7 * 2 = 14\nThe answer is 14.",
     "category_inferred": "arithmetic_two_step", "step_answers": ["7"]},
    {"prompt": "Calculate: (5 + 3) * 2", "completion": "5 + 3 = 8\n8 * 2 = 16\nThe answer is 16.", "task": "arithmetic",
     "answer": "16"},
    {"prompt": "Solve for x: 2x + 1 = 7", "task": "my_task", "kind": "reasoning", "completion": "x = 3"},
]
WRITTEN_BY_THE_MODEL = {"prompt": "Solve for x: 2x + 1 = 7", "task": "my_task", "kind": "reasoning"}


def _params(tmp: Path, model_dir: Path, queries: Path, **overrides):
    return make_params(tmp, model={"name_or_path": str(model_dir), "dir": str(tmp / "models/lm"), "context": 64},
                       corpus={"dataset": str(_corpus(tmp / "corpus.parquet")), "id_column": "id",
                               "source_column": "src"},
                       queries={"file": str(queries), "max_new_tokens": 8}, baselines={"methods": ["bm25"]},
                       **overrides)


def _queries(tmp: Path, rows: list[dict]) -> Path:
    path = tmp / "queries.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gpt2"])
def test_a_saved_model_runs_every_stage(tmp_path, arch):
    rows = [*QUERIES[:-1], WRITTEN_BY_THE_MODEL] if arch == "llama" else QUERIES  # a random Llama writes text
    params = _params(tmp_path, _save(arch, tmp_path), _queries(tmp_path, rows))
    corpus.run(params)
    manifest = json.loads((tmp_path / "data/corpus/_manifest.json").read_text())
    assert (manifest["read"], manifest["written"], manifest["empty_skipped"]) == (31, 30, 1)
    pretrain.run(params)
    model, _ = load_model(params.model.dir)
    assert not [m for m in model.modules() if type(m).__name__ == "Conv1D"]  # GPT-2's, swapped for nn.Linear
    probe.run(params)
    queries = pq.read_table(params.queries.out).to_pylist()
    assert [q["task"] for q in queries] == ["factual", "factual", "arithmetic", "arithmetic", "my_task"]
    assert queries[2]["answer"] == "14" and queries[2]["query_id"] == "arithmetic-002"
    assert queries[4]["kind"] == "reasoning" and queries[4]["completion"]
    if arch == "llama":  # the model's own completion, no answer given: explained, but counted in no accuracy
        assert queries[4]["correct"] is None and all(q["correct"] is not None for q in queries[:4])
        accuracy = json.loads(Path(params.queries.metrics).read_text())
        assert accuracy["n_queries"]["my_task"] == 1 and accuracy["n_checked"]["my_task"] == 0
        assert accuracy["accuracy"]["my_task"] is None
    factors.run(params)
    scores.run(params)
    baselines.run(params)
    analyze.run(params)
    table = pq.read_table(tmp_path / "results/scores/", partitioning=None,  # influence's shards; its variants beside
                          ignore_prefixes=["identity", "ekfac_cosine", "relatif"])
    values = table.column("score").to_numpy()
    whole = table.filter(pc.equal(table.column("segment"), "all"))
    assert whole.num_rows == 5 * 30 and np.isfinite(values).all() and np.abs(values).max() > 0
    n_segments = len({(q, s) for q, s in zip(*(pq.read_table(params.queries.segments).column(c).to_pylist()
                                                for c in ("query_id", "segment")))})
    assert table.num_rows == (5 + n_segments) * 30  # and each answer segment, whatever the tokenizer
    assert sorted(set(table.column("doc_id").to_pylist())) == list(range(100, 130))  # the file's own ids
    stats = pq.read_table(tmp_path / "results/query_stats.parquet")
    stats = stats.filter(pc.equal(stats.column("segment"), "all"))
    methods = {"influence", "identity", "ekfac_cosine", "relatif", "bm25"}  # the variants on every architecture
    assert stats.num_rows == 5 * len(methods) and set(stats.column("method").to_pylist()) == methods
    for variant in ("identity", "ekfac_cosine", "relatif"):
        scored = pq.read_table(tmp_path / "results/scores" / variant, partitioning=None).column("score").to_numpy()
        assert len(scored) == len(values) and np.isfinite(scored).all() and np.abs(scored).max() > 0
    assert pq.read_table(tmp_path / "results/procedure_share.parquet").num_rows == 0  # no ground truth
    if arch == "llama":  # the report renders on a corpus without ground truth too
        page = report.run(dataclasses.replace(params, report=dataclasses.replace(
            params.report, out_dir=str(tmp_path / "report"), notebook=str(REPO / params.report.notebook))))
        text = page.read_text()
        assert "no ground truth" in text and "nan%" not in text and "world's ground truth" not in text
        assert "own task (my_task)" in text  # named, not dropped
        arithmetic = text.split("(arithmetic)</h4>", 1)[1].split("<h4>", 1)[0]  # section 10's reasoning query
        assert "<b>" in arithmetic and "<mark>" not in arithmetic  # worked steps bold, a small number unmarked


@pytest.mark.skipif(not SHARED_QUERIES.is_file(), reason="the published query set is not beside this checkout")
def test_the_published_query_set_reads_as_a_user_file():
    from queries import user

    specs, completions = user.read(SHARED_QUERIES)
    assert len(specs) == 200 and all(completions)
    tasks = {s.task for s in specs}
    assert {"factual", "arithmetic", "slope", "linear"} <= tasks
    assert specs[0].query_id == "7B-000" and specs[0].kind == "factual"
    reasoning = [s for s in specs if s.task in ("arithmetic", "slope", "linear")]
    assert sum(bool(s.answer) for s in reasoning) >= 0.9 * len(reasoning)  # read from the completions


def test_chunking_long_documents(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": " ".join(["lorem"] * 25)}) + "\n"
                    + json.dumps({"text": "short one"}) + "\n")
    params = make_params(tmp_path, corpus={"dataset": str(path), "long_docs": "chunk", "chunk_tokens": 10})
    corpus.run(params)
    texts = pq.read_table(tmp_path / "data/corpus").column("text").to_pylist()
    assert [len(t.split()) for t in texts] == [10, 10, 5, 2]
    assert json.loads((tmp_path / "data/corpus/_manifest.json").read_text())["chunked"] == 1


# ---------------------------------------------------------------- bad input: one line naming the file and field

def _bad_corpus(tmp: Path, name: str, content: bytes | None = None, rows: list[dict] | None = None) -> Path:
    path = tmp / name
    if rows is not None:
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case, corpus_params, message", [
    ("missing text column", dict(rows=[{"body": "x"}]), r"corpus.parquet: no column 'text' \(columns: body\)"),
    ("empty document, refused", dict(rows=[{"text": "a"}, {"text": ""}], empty_docs="error"),
     r"corpus.parquet: row 2: empty text \(set corpus.empty_docs: skip\)"),
    ("duplicate id", dict(rows=[{"text": "a", "id": 1}, {"text": "b", "id": 1}], id_column="id"),
     r"corpus.parquet: row 2: duplicate id 1"),
    ("non-integer id", dict(rows=[{"text": "a", "id": "x1"}], id_column="id"),
     r"corpus.parquet: row 1: id must be an integer, got 'x1'"),
    ("a number as text", dict(content=b'{"text": "ok"}\n{"text": 7}\n'),
     r"corpus.jsonl: row 2: text holds int 7, not a string"),
    ("empty file", dict(content=b""), r"corpus.jsonl: empty file \(no rows\)"),
    ("non-UTF-8 bytes", dict(content=b'{"text": "ok"}\n{"text": "bad \xff bytes"}\n'),
     r"corpus.jsonl: line 2: not valid UTF-8 \(byte 15 of the line\)"),
    ("malformed JSON line", dict(content=b'{"text": "ok"}\n{"text": "no end"\n{"text": "ok"}\n'),
     r"corpus.jsonl: line 2: not valid JSON \(Expecting ',' delimiter"),
    ("no such file", dict(missing=True), r"corpus.dataset: .*nowhere.parquet: no such file"),
    ("only empty documents", dict(rows=[{"text": " "}]), r"corpus.parquet: no documents to keep \(1 read, 1 empty\)"),
])
def test_bad_corpus_input(tmp_path, capfd, case, corpus_params, message):
    rows, content = corpus_params.pop("rows", None), corpus_params.pop("content", None)
    if corpus_params.pop("missing", False):
        path = tmp_path / "nowhere.parquet"
    else:
        path = _bad_corpus(tmp_path, "corpus.jsonl" if content is not None else "corpus.parquet", content, rows)
    params = make_params(tmp_path, corpus={"dataset": str(path), **corpus_params})
    with pytest.raises(WherefromError, match=message):
        corpus.run(params)
    assert "Failed to load JSON" not in capfd.readouterr().err  # the reader's own log line: ours names the line
    assert not (tmp_path / "data/corpus").exists()  # nothing half-written


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "Q?", "completion": "", "task": "factual"}], r"queries.jsonl: line 1: empty completion"),
        ([{"prompt": "", "task": "factual"}], r"queries.jsonl: line 1: empty prompt"),
        ([{"task": "factual"}], r"queries.jsonl: line 1: prompt: Field required"),
        ([{"prompt": "Q?", "task": "poetry"}], r"line 1: task 'poetry' is not one of factual, .* \(or give kind"),
        (
            [
                {"prompt": "Q?", "task": "factual", "query_id": "a"},
                {"prompt": "R?", "task": "factual", "query_id": "a"},
            ],
            r"queries.jsonl: line 2: duplicate query_id 'a'",
        ),
        (
            [{"prompt": "Q?", "task": "factual", "completion": 42}],
            r"line 1: completion: Input should be a valid string \(got 42\)",
        ),
        (
            [{"prompt": "Q?", "task": "arithmetic", "step_answers": "4236"}],
            r"line 1: step_answers: Input should be a valid list \(got '4236'\)",
        ),
        ([["Q?", "factual"]], r"queries.jsonl: line 1: expected a JSON object \(one query\), got list"),
    ],
)
def test_bad_query_file(tmp_path, rows, message):
    from queries import user

    with pytest.raises(WherefromError, match=message):
        user.read(_queries(tmp_path, rows))


def test_a_query_file_may_be_a_json_array_and_bad_bytes_are_named_by_line(tmp_path):
    from queries import user

    path = tmp_path / "queries.json"
    path.write_text(json.dumps([{"prompt": "Q?", "task": "factual", "answer": 7, "step_answers": [1, "2"]}]))
    specs, completions = user.read(path)
    assert (specs[0].answer, specs[0].step_answers, completions) == ("7", ["1", "2"], [None])
    path.write_text(json.dumps({"prompt": "Q?"}))
    with pytest.raises(WherefromError, match=r"queries.json: expected a JSON array of query objects, got dict"):
        user.read(path)
    path = tmp_path / "queries.jsonl"
    path.write_bytes(b'{"prompt": "Q?", "task": "factual"}\n{"prompt": "bad \xff", "task": "factual"}\n')
    with pytest.raises(WherefromError, match=r"queries.jsonl: line 2: not valid UTF-8 \(byte 17 of the line\)"):
        user.read(path)


def test_a_completion_of_zero_tokens_is_refused(tmp_path):
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    model_dir = _save("llama", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")  # a tokenizer that drops a character
    tokenizer.save_pretrained(model_dir)
    params = _params(
        tmp_path,
        model_dir,
        _queries(tmp_path, [{"prompt": "Q?", "completion": "\u200b", "task": "factual", "answer": "x"}]),
    )
    pretrain.run(params)
    with pytest.raises(
        WherefromError, match=r"queries.jsonl: query factual-000: the completion '\\u200b' is zero tokens"
    ):
        probe.run(params)


@pytest.mark.parametrize("case, message", [
    ("no weights", r"model .*: cannot be loaded: "),
    ("truncated weights", r"model .*: cannot be loaded: "),
    ("tokenizer of another model", r"the tokenizer does not match the model \(\d+ tokens, 16 embeddings\)"),
])
def test_bad_model_directory(tmp_path, case, message):
    path = _save("llama", tmp_path)
    if case == "no weights":
        (path / "model.safetensors").unlink()
    elif case == "truncated weights":
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2))
        model.save_pretrained(path)  # same directory, the old (larger) tokenizer stays
    with pytest.raises(WherefromError, match=message):
        load_model(path)
