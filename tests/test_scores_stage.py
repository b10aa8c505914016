"""The factors and scores stages: Dask sharding, resuming, DuckDB, and bad input."""

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, external_dask_cluster, make_params

from influence import measurements, shards
from influence.scoring import runner
from pipeline.core import schemas
from pipeline.core.corpus_reader import read_texts
from pipeline.core.errors import WherefromError
from pipeline.core.model import load_model
from pipeline.stages import factors, probe, scores
from pipeline.world.generate import world_for


@pytest.fixture(scope="module")
def staged(trained):
    """The test profile through probe and factors (shared, read-only)."""
    probe.run(trained)
    factors.run(trained)
    return trained


@pytest.fixture(scope="module")
def scored(staged, tmp_path_factory):
    """The staged run scored on one worker (shared, read-only: a test that changes it works on a copy)."""
    params = with_scores(staged, tmp_path_factory.mktemp("scored"))
    scores.run(params)
    return params


def scored_copy(scored, staged, tmp_path):
    """``scored``'s scores copied under ``tmp_path``, as params that write there: the run key holds no path, so
    every copied shard is complete."""
    params = with_scores(staged, tmp_path)
    shutil.copytree(scored.scores.out_dir, params.scores.out_dir)
    return params


def with_scores(staged, tmp_path, workers=1, **scores_cfg):
    """The staged run with scores written under ``tmp_path`` (small shards so there are several). One torch
    thread per worker, whatever the number of workers: the thread count changes float rounding."""
    return make_params(Path(staged.corpus.out_dir).parents[1], dask={"workers": workers, "threads_per_worker": 1},
                       scores={"out_dir": str(tmp_path / "scores"), "shard_size": 20, **scores_cfg})


def n_corpus_docs(params) -> int:
    return sum(pq.read_metadata(f).num_rows for f in Path(params.corpus.out_dir).glob("*.parquet"))


def table(out_dir) -> list[tuple]:
    con = duckdb.connect()
    return con.execute(
        f"SELECT query_id, segment, doc_id, score, score_per_nat FROM read_parquet('{out_dir}/shard=*/part.parquet') "
        "ORDER BY query_id, segment, doc_id"
    ).fetchall()


def n_rows(params) -> int:
    """Score rows per document: each query's whole completion and each of its answer segments."""
    return len(measurements.read(params.queries.out, params.queries.segments))


@pytest.mark.slow
def test_one_and_two_workers_write_the_same_scores_and_duckdb_reads_them(staged, scored, tmp_path):
    one = scored
    two = with_scores(staged, tmp_path / "two", workers=2)
    scores.run(two)
    n_docs = n_corpus_docs(staged)
    n_queries = pq.read_metadata(staged.queries.out).num_rows
    rows = table(one.scores.out_dir)
    assert len(rows) == n_rows(staged) * n_docs > n_queries * n_docs
    assert rows == table(two.scores.out_dir)
    files = sorted(Path(one.scores.out_dir).glob("shard=*/part.parquet"))
    assert len(files) == -(-n_docs // 20)
    assert all(pq.read_schema(f).remove_metadata() == schemas.SCORES for f in files)
    _, tok = load_model(staged.model.dir)
    texts = read_texts(staged.corpus.out_dir)
    read = shards.coverage(
        files
    )  # every token but each document's leading <|endoftext|>, in more windows than documents
    assert read["tokens"] == sum(len(ids) for ids in tok(texts)["input_ids"]) - n_docs and read["windows"] > n_docs


@pytest.mark.slow
def test_broken_shards_are_recomputed_and_complete_ones_kept(staged, scored, tmp_path):
    params = scored_copy(scored, staged, tmp_path)
    reference = table(scored.scores.out_dir)
    files = sorted(Path(params.scores.out_dir).glob("shard=*/part.parquet"))
    truncated, removed, kept = files[0], files[1], files[2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    removed.unlink()
    kept_mtime = kept.stat().st_mtime_ns
    scores.run(params)
    assert table(params.scores.out_dir) == reference
    assert kept.stat().st_mtime_ns == kept_mtime


@pytest.mark.slow
def test_the_pass_writes_every_variant_and_a_lost_variant_shard_is_redone(staged, scored, tmp_path):
    """influence's pass writes identity, ekfac_cosine and relatif beside it, shard for shard. The two normalised
    variants divide each document's score by a positive number, RelatIF by the document's alone, so within a
    row both rank documents alike, and a row's sign pattern is influence's. A variant's lost shard is redone."""
    params = scored_copy(scored, staged, tmp_path)
    out = Path(params.scores.out_dir)
    influence = table(out)
    by_method = {m: table(out / m) for m in ("identity", "ekfac_cosine", "relatif")}
    assert all([r[:3] for r in rows] == [r[:3] for r in influence] for rows in by_method.values())
    assert by_method["identity"] != influence
    signs = {m: [math.copysign(1, r[3]) for r in rows if r[3] != 0] for m, rows in by_method.items()}
    assert signs["ekfac_cosine"] == signs["relatif"] == [math.copysign(1, r[3]) for r in influence if r[3] != 0]
    ratio = [c[3] / r[3] for c, r in zip(by_method["ekfac_cosine"], by_method["relatif"]) if r[3] != 0]
    per_row = {}
    for (qid, segment, *_), value in zip((r for r in by_method["relatif"] if r[3] != 0), ratio):
        per_row.setdefault((qid, segment), []).append(value)
    assert all(max(v) == pytest.approx(min(v), rel=1e-5) for v in per_row.values())  # 1 / the row's norm

    lost = out / "relatif" / "shard=00001/part.parquet"
    lost.unlink()
    kept = sorted(out.glob("shard=*/part.parquet"))[0]
    mtime = kept.stat().st_mtime_ns
    scores.run(params)
    assert table(out / "relatif") == by_method["relatif"]
    assert kept.stat().st_mtime_ns == mtime


# A Dask worker preload (run in each worker process at start): the worker writes two shards (each its variants'
# files, then influence's, last), then its next write blocks until the test kills the run. The kill lands at the
# same point on any machine.
BLOCK_AFTER_TWO_SHARDS = """
import threading

from influence import shards

if not hasattr(shards, "unblocked_write"):  # Dask may execute a preload twice in one worker
    shards.unblocked_write, shards.written = shards.write, []


def write(*args, **kwargs):
    if len(shards.written) == 2:
        threading.Event().wait()  # never set: the test kills the whole run here
    shards.unblocked_write(*args, **kwargs)
    if args[0].parent.parent.name == "scores":  # influence's own file: the shard is complete
        shards.written.append(args[0])


shards.write = write
"""


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_shards(staged, tmp_path):
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "test"
    raw["profiles"]["test"] |= {"scores": {"shard_size": 5}, "dask": {"workers": 1, "threads_per_worker": 1}}
    for section, key, value in [  # output paths live at the top level, where dvc.yaml reads them
        ("scores", "out_dir", str(tmp_path / "scores")),
        ("corpus", "out_dir", staged.corpus.out_dir),
        ("model", "dir", staged.model.dir),
        ("queries", "out", staged.queries.out),
        ("queries", "segments", staged.queries.segments),
        ("influence", "factors_dir", staged.influence.factors_dir),
    ]:
        raw.setdefault(section, {})[key] = value
    params_file.write_text(yaml.safe_dump(raw))
    preload = tmp_path / "block_after_two_shards.py"
    preload.write_text(BLOCK_AFTER_TWO_SHARDS)
    cmd = [sys.executable, "-m", "pipeline", "scores", "--params", str(params_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{preload}']"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "scores"
    deadline = time.time() + 120
    while len(list(out.glob("shard=*/part.parquet"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # a third shard, were the block not holding, would land now
    assert proc.poll() is None, "the run ended before the kill (run it by hand for its error)"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the run and its Dask workers
    proc.wait()
    finished = {f: f.stat().st_mtime_ns for f in out.glob("shard=*/part.parquet")}
    n_shards = -(-n_corpus_docs(staged) // 5)
    assert len(finished) == 2 < n_shards, "the kill lands after the worker's second shard"
    assert not list(out.rglob("*.tmp"))  # nothing half-written is left looking like a shard
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    assert {f: f.stat().st_mtime_ns for f in finished} == finished
    assert len(list(out.glob("shard=*/part.parquet"))) == n_shards
    clean = with_scores(staged, tmp_path / "clean", workers=1, shard_size=5)
    scores.run(clean)
    assert table(out) == table(clean.scores.out_dir)


def test_empty_completion_is_refused(staged, tmp_path):
    import pyarrow as pa

    bad = tmp_path / "queries.parquet"
    t = pq.read_table(staged.queries.out)
    completions = t.column("completion").to_pylist()
    completions[1] = "  "
    pq.write_table(t.set_column(t.schema.get_field_index("completion"), "completion", pa.array(completions)), bad)
    with pytest.raises(WherefromError, match=r"queries.parquet: query \S+ has an empty completion"):
        runner.check_queries(str(bad))


def test_missing_factors_are_named(staged, tmp_path):
    params = make_params(Path(staged.corpus.out_dir).parents[1], influence={"factors_dir": str(tmp_path / "none")})
    with pytest.raises(WherefromError, match="no factors here; run the factors stage first"):
        scores.run(params)


def test_bm25_baseline_writes_the_same_schema_and_finds_lexical_matches(staged, tmp_path):
    """BM25 reads the query's prompt and completion. Each completion is set to the right answer here, so
    that what the tiny test model happens to write does not decide what BM25 should find."""
    answered = pq.read_table(staged.queries.out)
    answered = answered.set_column(
        answered.schema.get_field_index("completion"), "completion", answered.column("answer")
    )
    pq.write_table(answered, tmp_path / "queries.parquet")
    params = with_scores(staged, tmp_path, method="bm25")
    params = dataclasses.replace(
        params, queries=dataclasses.replace(params.queries, out=str(tmp_path / "queries.parquet"))
    )
    scores.run(params)
    rows = table(params.scores.out_dir)
    queries = answered.to_pylist()
    assert len(rows) == n_rows(staged) * n_corpus_docs(staged)
    rows = [r for r in rows if r[1] == "all"]  # the segments are the original completion's
    entity = {f.fact_id: f.entity for f in world_for(staged).facts}
    texts = dict(duckdb.connect().execute(
        f"SELECT doc_id, text FROM read_parquet('{staged.corpus.out_dir}/*.parquet')").fetchall())
    for q in (q for q in queries if q["task"] == "factual"):
        top = max((r for r in rows if r[0] == q["query_id"]), key=lambda r: r[3])
        assert entity[q["fact_id"]] in texts[top[2]]


def test_refitted_factors_invalidate_finished_shards(staged, tmp_path):
    """Same model, strategy and documents but other factors (another sampling seed): every shard is redone."""
    from influence import data
    from influence.curvature import factors as curvature

    factors_dir = tmp_path / "factors"
    shutil.copytree(staged.influence.factors_dir, factors_dir)
    params = make_params(Path(staged.corpus.out_dir).parents[1], influence={"factors_dir": str(factors_dir)},
                         scores={"out_dir": str(tmp_path / "scores"), "shard_size": 20})
    scores.run(params)
    before = table(params.scores.out_dir)
    model, tok = load_model(staged.model.dir)
    docs = data.documents(tok, read_texts(staged.corpus.out_dir), staged.model.context)
    curvature.fit(model, tok.pad_token_id, docs, "ekfac", "mlp", staged.influence.batch_size, factors_dir, seed=1)
    scores.run(params)
    after = table(params.scores.out_dir)
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert [r[3] for r in after] != [r[3] for r in before]


@pytest.mark.slow
def test_a_worker_killed_mid_run_has_its_shards_rescheduled(staged, tmp_path):
    """Two Dask workers; one is SIGKILLed after the first shard lands. Dask reschedules its work (the
    nanny restarts it) and the scores come out complete and equal to a clean run's."""
    import threading

    import psutil

    params = with_scores(staged, tmp_path / "killed", workers=2, shard_size=5)
    out = Path(params.scores.out_dir)
    killed = []

    def kill_one_worker():
        deadline = time.time() + 120
        while not list(out.glob("shard=*/part.parquet")) and time.time() < deadline:
            time.sleep(0.05)
        workers = [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
        if workers:
            workers[0].send_signal(signal.SIGKILL)
            killed.append(len(list(out.glob("shard=*/part.parquet"))))

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    scores.run(params)
    killer.join()
    n_shards = -(-n_corpus_docs(staged) // 5)
    assert killed and killed[0] < n_shards, "the kill should land on a worker, mid-run"
    assert len(list(out.glob("shard=*/part.parquet"))) == n_shards
    clean = with_scores(staged, tmp_path / "clean", workers=1, shard_size=5)
    scores.run(clean)
    assert table(out) == table(clean.scores.out_dir)


def _worker_settings() -> dict:
    import dask

    from influence.cluster import TORCH_FRIENDLY_DASK

    return {key: (os.environ.get("MALLOC_TRIM_THRESHOLD_") if key.endswith("MALLOC_TRIM_THRESHOLD_")
                  else dask.config.get(key)) for key in TORCH_FRIENDLY_DASK}


def test_local_workers_run_with_the_torch_friendly_dask_settings():
    """The settings reach the worker processes themselves (the nanny passes config and environment on)."""
    from influence.cluster import TORCH_FRIENDLY_DASK, dask_client
    from influence.settings import Cluster

    with dask_client(Cluster(workers=2)) as client:
        settings = client.run(_worker_settings)
    assert len(settings) == 2
    for worker, seen in settings.items():
        assert seen == TORCH_FRIENDLY_DASK, worker


def test_the_docs_give_the_same_dask_settings_for_workers_started_by_hand():
    from influence.cluster import TORCH_FRIENDLY_DASK

    notes = (REPO / "docs/engineering.md").read_text()  # where the README sends users who start their own workers
    block = notes[notes.index("```yaml\ndistributed:"):]
    block = block[len("```yaml\n"):block.index("```", 3)]

    def flat(tree: dict, prefix: str = "") -> dict:
        return {k: v for key, value in tree.items()
                for k, v in (flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                             else {f"{prefix}{key}": value}).items()}

    assert flat(yaml.safe_load(textwrap.dedent(block))) == TORCH_FRIENDLY_DASK


@pytest.mark.parametrize("method", ["influence", "bm25"])
def test_a_document_edited_under_its_id_is_scored_again(staged, tmp_path, method):
    """The run key hashes the corpus's content: same ids, new text, new scores (not 'already complete')."""
    import pyarrow as pa

    from pipeline.core.corpus_reader import corpus_files

    corpus_dir = tmp_path / "corpus"
    shutil.copytree(staged.corpus.out_dir, corpus_dir)
    params = with_scores(staged, tmp_path, method=method)
    params = dataclasses.replace(params, corpus=dataclasses.replace(params.corpus, out_dir=str(corpus_dir)))
    scores.run(params)
    before = table(params.scores.out_dir)
    path = corpus_files(corpus_dir)[0]
    docs = pq.read_table(path)
    texts = docs.column("text").to_pylist()
    edited = docs.column("doc_id")[0].as_py()
    texts[0] = "What is the capital of the moon? Nobody has ever written it down."
    pq.write_table(docs.set_column(docs.schema.get_field_index("text"), "text", pa.array(texts)), path)
    scores.run(params)
    after = table(params.scores.out_dir)
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert any(b[3] != a[3] for b, a in zip(before, after) if b[2] == edited)


@pytest.mark.slow
def test_an_external_dask_cluster_writes_the_same_scores(staged, scored, tmp_path):
    """`dask scheduler` and `dask worker` started by hand, the worker in another directory, as on a real
    cluster: the jobs carry absolute paths, and the scores equal a LocalCluster run's."""
    with external_dask_cluster(tmp_path) as address:
        external = with_scores(staged, tmp_path / "external")
        external = dataclasses.replace(external, dask=dataclasses.replace(external.dask, scheduler=address))
        scores.run(external)
    assert table(external.scores.out_dir) == table(scored.scores.out_dir)


def test_an_unreachable_scheduler_is_one_line(staged, tmp_path):
    params = with_scores(staged, tmp_path)
    params = dataclasses.replace(params, dask=dataclasses.replace(params.dask, scheduler="tcp://127.0.0.1:9",
                                                                   connect_timeout_s=2))
    with pytest.raises(WherefromError, match=r"dask.scheduler: tcp://127.0.0.1:9: cannot connect within 2s"):
        scores.run(params)


def test_outputs_take_the_umask_not_tempfiles_private_modes(staged, scored):
    """Workers of a shared cluster, maybe running as another user, must be able to read every output."""
    from pipeline.core.atomic import DIR_MODE, FILE_MODE

    files = [*Path(staged.corpus.out_dir).glob("*.parquet"), Path(staged.queries.out),
             *Path(scored.scores.out_dir).glob("shard=*/part.parquet")]
    assert files and {f.stat().st_mode & 0o777 for f in files} == {FILE_MODE}
    assert Path(staged.model.dir).stat().st_mode & 0o777 == DIR_MODE
