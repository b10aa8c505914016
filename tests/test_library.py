"""The engine as a library (docs/library.md): its example runs as written on a tiny model saved here, and the
``Workspace``'s scores are the scorer's own on the same model, factors and texts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from influence import data
from influence.scoring.scorer import Scorer
from influence.workspace import Workspace
from pipeline.core.errors import WherefromError
from pipeline.core.model import load_model, train_tokenizer

DOC = REPO / "docs" / "library.md"
TEXTS = [f"The capital of Land{i} is City{i}. Step: {i} + 3 = {i + 3}, then {i + 3} * 2 = {2 * i + 6}."
         for i in range(20)] + [" ".join(f"word{i} is {i}." for i in range(80))]  # one text longer than the context


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random-init GPT-NeoX (Pythia's architecture) and a tokenizer trained here: no hub."""
    path = tmp_path_factory.mktemp("tiny") / "gpt_neox"
    tokenizer = train_tokenizer(TEXTS, 300)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_documented_example_runs_as_written(tiny, tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL).group(1)
    assert 'MODEL = "EleutherAI/pythia-70m"' in code and len(code.strip().splitlines()) <= 25
    script = tmp_path / "example.py"
    script.write_text(code.replace('"EleutherAI/pythia-70m"', repr(str(tiny))))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()  # the engine's progress, the scores, then the top two texts
    assert re.fullmatch(r"\[\[(\s*-?\d+\.\d*){4}\]\]", next(line for line in lines if line.startswith("[[")))
    assert all(re.match(r"[+-]\d+\.\d{3}  \S", line) for line in lines[-2:])
    assert (tmp_path / "attribution" / "factors" / "manifest.json").is_file()


def test_a_workspace_scores_as_the_scorer_does_and_resumes(tiny, tmp_path):
    model, tokenizer = load_model(tiny)
    work = Workspace(tmp_path / "work", model, tokenizer, TEXTS, context=64, batch_size=4)
    work.fit_factors()
    prompts, completions = ["The capital of Land3 is", "Step: 4 + 3 ="], [" City3.", " 7, then 7 * 2 = 14."]
    scores = work.score(prompts, completions)

    fresh, tok = load_model(work.model_dir)
    scorer = Scorer(fresh, tok.pad_token_id, Path(work.factors_dir), data.queries(tok, prompts, completions), 4)
    docs = data.documents(tok, TEXTS, 64)
    assert len(docs) > len(TEXTS)  # the long text is read in windows, summed back per text
    expected = docs.per_document(scorer.score(docs)).numpy()
    assert scores.shape == (2, len(TEXTS)) and np.abs(scores).max() > 0
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())

    shards = sorted((tmp_path / "work" / "scores").rglob("part.parquet"))
    before = {f: f.stat().st_mtime_ns for f in shards}
    again = Workspace(tmp_path / "work", model, tokenizer, TEXTS, context=64, batch_size=4)
    np.testing.assert_array_equal(again.score(prompts, completions), scores)
    assert {f: f.stat().st_mtime_ns for f in shards} == before  # nothing finished was redone

    work.build_index()
    answer = work.ask(prompts[0], completions[0], top=3)
    assert len(answer.top) == 3 and all(doc["text"] == TEXTS[doc["doc_id"]] for doc in answer.top)


def test_a_workspace_says_what_is_wrong_in_one_line(tiny, tmp_path):
    model, tokenizer = load_model(tiny)
    with pytest.raises(WherefromError, match="Workspace: no texts to attribute to"):
        Workspace(tmp_path / "none", model, tokenizer, [])
    work = Workspace(tmp_path / "work", model, tokenizer, TEXTS[:3], context=64)
    with pytest.raises(WherefromError, match="score: 2 prompts and 1 completions"):
        work.score(["a", "b"], ["c"])
    with pytest.raises(WherefromError, match=r"factors: no factors here; run the factors stage first"):
        work.score(["a"], [" b"])
