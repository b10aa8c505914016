"""Tokenizer, pretraining and the probe's numbers (NLL, completions), on tiny models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_params, write_params
from test_pipeline_e2e import run_env

from pipeline.core import schemas
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import build_model, completion_nll, encode_query, load_model, sample_tokens, train_tokenizer
from pipeline.core.training import token_stream, train
from pipeline.stages import pretrain, probe


def test_tokenizer_splits_digits_and_marks_document_starts():
    tok = train_tokenizer(["The answer is 12345.\n7 - 4 = 3"] * 20, vocab_size=300)
    pieces = tok.convert_ids_to_tokens(tok("is 12345")["input_ids"])
    assert pieces[0] == tok.eos_token  # every sequence starts like a training document
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["1", "2", "3", "4", "5"]
    ids, start = encode_query(tok, "Calculate: 7 - 4", "7 - 4 = 3")
    assert tok.decode(ids[start:]) == "7 - 4 = 3"
    assert tok.decode(ids[1:start]) == "Calculate: 7 - 4\n"


def test_sampled_targets_follow_the_model_distribution():
    """True-Fisher targets: each row's draws match its softmax (chi-square), zero-probability tokens never come up."""
    from scipy.stats import chisquare

    logits = torch.tensor([[0.0, 1.0, 2.0, -float("inf")], [3.0, 0.0, 0.0, 0.0]])
    torch.manual_seed(0)
    draws = sample_tokens(logits.repeat_interleave(20000, dim=0)).view(2, 20000)
    for row, probs in zip(draws, torch.softmax(logits, -1)):
        counts = torch.bincount(row, minlength=4)
        assert counts[probs == 0].sum() == 0
        seen = probs > 0
        expected = probs[seen].double().numpy()
        assert chisquare(counts[seen].numpy(), expected / expected.sum() * len(row)).pvalue > 0.01


def test_tiny_pretrain_lowers_the_loss(tmp_path):
    params = make_params(tmp_path, pretrain={"steps": 120, "log_every": 40})
    from pipeline.stages import corpus
    corpus.run(params)
    texts = read_texts(params.corpus.out_dir)
    tok = train_tokenizer(texts, params.model.vocab_size)
    stream = torch.from_numpy(token_stream(tok, texts).astype("int64"))
    windows = stream[: 8 * 64].view(8, 64)  # fixed text, scored before and after

    def loss(m):
        with torch.no_grad():
            return m(input_ids=windows, labels=windows).loss.item()

    model = build_model(params.model, tok, params.seed)
    before = loss(model)
    logged = train(model, stream.numpy(), params.pretrain, params.model.context, params.seed)
    after = loss(model)
    assert len(logged) == 3
    assert after < before - 1.5, (before, after)  # nats per token: far more than noise


def test_pretrain_saves_a_loadable_model(trained):
    model, tok = load_model(trained.model.dir)
    assert (json.loads(open(trained.pretrain.metrics).read())["n_params"]
            == sum(p.numel() for p in model.parameters()))
    assert any(p.name.endswith(".safetensors") for p in Path(trained.model.dir).iterdir())
    assert tok.eos_token_id == model.config.eos_token_id


def test_completion_nll_matches_token_by_token_log_probs(trained):
    model, tok = load_model(trained.model.dir)
    prompts, completions = ["What is the capital of X?", "Solve for x: 2x + 1 = 7\n\nThink step-by-step."], \
                           ["The capital of X is Y.", "7 - 1 = 6\n6 / 2 = 3\nThe answer is 3."]
    batched = completion_nll(model, tok, prompts, completions, batch_size=2)
    for prompt, completion, nll in zip(prompts, completions, batched):  # one at a time, no padding, by hand
        ids, start = encode_query(tok, prompt, completion)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        expected = -sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
        assert nll == pytest.approx(expected, rel=1e-4)
    assert batched[0] > 0
    for prompt, completion in zip(prompts, completions):  # unpadded, the same forward: float64 to the last digits
        ids, start = encode_query(tok, prompt, completion)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        expected = -sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
        assert completion_nll(model, tok, [prompt], [completion], batch_size=1)[0] == pytest.approx(expected, rel=1e-12)


def test_probe_writes_the_contract_and_is_deterministic(trained, tmp_path):
    probe.run(trained)
    first = open(trained.queries.out, "rb").read()
    table = pq.read_table(trained.queries.out)
    assert table.schema == schemas.QUERIES
    rows = table.to_pylist()
    assert {r["task"] for r in rows} == {
        "factual",
        "arithmetic",
        "slope",
        "linear",
        "factual_control",
        "reasoning_control",
    }
    assert all(r["completion_nll"] >= 0 for r in rows)
    assert all(r["fact_id"] for r in rows if r["task"] == "factual")
    assert all(r["step_answers"] for r in rows if r["task"] in ("arithmetic", "slope", "linear"))
    metrics = json.loads(open(trained.queries.metrics).read())
    assert metrics["n_queries"]["factual"] == trained.queries.factual
    probe.run(trained)
    assert open(trained.queries.out, "rb").read() == first


def test_external_model_is_used_without_training(trained, tmp_path):
    external = make_params(tmp_path, model={"name_or_path": trained.model.dir, "dir": str(tmp_path / "lm")})
    pretrain.run(external)
    model, _ = load_model(external.model.dir)
    reference, _ = load_model(trained.model.dir)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert not list((tmp_path / "lm").glob("*.safetensors"))  # a pointer, not a copy


@pytest.mark.parametrize("path, message", [
    ("./no/such/model", "model.name_or_path: no such directory: ./no/such/model"),
    ("{tmp}", "has no config.json (not a saved model)"),
])
def test_bad_model_path_is_one_line_and_leaves_nothing(tmp_path, path, message):
    params = make_params(tmp_path, model={"name_or_path": path.format(tmp=tmp_path), "dir": str(tmp_path / "lm")})
    with pytest.raises(WherefromError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pretrain.run(params)
    assert not (tmp_path / "lm").exists() and not (tmp_path / "results").exists()


def test_a_corpus_shorter_than_one_window_is_one_line(tmp_path):
    params = make_params(tmp_path, model={"context": 64})
    model_stub = build_model(params.model, train_tokenizer(["a b c"], 300), params.seed)
    with pytest.raises(WherefromError, match=r"^3 corpus tokens, fewer than one training window "
                                             r"\(model.context \+ 1 = 65\)"):
        train(model_stub, np.arange(3, dtype=np.int32), params.pretrain, params.model.context, params.seed)


@pytest.mark.slow
def test_pretrain_killed_mid_run_resumes_to_the_same_weights(tmp_path):
    """kill -9 after a checkpoint, then rerun: training resumes at the checkpoint (not at step 0) and ends
    with the weights and loss curve of an uninterrupted run, bit for bit."""
    def prepared(root: Path) -> Path:
        path = write_params(root, runtime={"checkpoint_every": 25}, pretrain={"steps": 100})
        subprocess.run([sys.executable, "-m", "pipeline", "corpus", "--params", str(path)], cwd=root, env=run_env(),
                       check=True, capture_output=True)
        return path

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for root in (whole, killed):
        root.mkdir()
    command = [sys.executable, "-m", "pipeline", "pretrain", "--params"]
    subprocess.run([*command, str(prepared(whole))], cwd=whole, env=run_env(), check=True, capture_output=True)

    checkpoint = killed / "models" / "lm.checkpoint"
    proc = subprocess.Popen([*command, str(prepared(killed))], cwd=killed, env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_file() and not (killed / "models" / "lm").exists(), "killed before or after training"
    step = torch.load(checkpoint, weights_only=False)["step"]
    out = subprocess.run([*command, str(killed / "params.yaml")], cwd=killed, env=run_env(), check=True,
                         capture_output=True, text=True).stdout
    assert f"resumed at step {step:,} of 100" in out and 0 < step < 100
    assert not checkpoint.exists()  # removed once training ended
    (a, _), (b, _) = load_model(whole / "models/lm"), load_model(killed / "models/lm")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert (whole / "metrics/pretrain_loss.csv").read_text() == (killed / "metrics/pretrain_loss.csv").read_text()
