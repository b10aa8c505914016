"""End to end: real `dvc repro` of the whole pipeline on the `test` profile, in a fresh repository."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.analysis.findings import SHARED_TEST
from pipeline.analysis.spread import spread as study_spread
from pipeline.core import schemas
from pipeline.core.atomic import write_parquet
from pipeline.core.config import load_params
from pipeline.runs import methods as run_methods

REPO = Path(__file__).resolve().parents[1]
COPIED = [
    "pipeline",
    "queries",
    "influence",
    "reports/sql",
    "reports/procedural_vs_factual.py",
    "reports/offline.html.j2",
    "dvc.yaml",
    "validate/dvc.yaml",
    "seeds/dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
]


def run_env() -> dict:
    """The environment of a command the tests run: one thread, no DVC analytics, this venv's tools first."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(args, cwd):
    proc = subprocess.run(args, cwd=cwd, env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def new_project(root: Path, edit=None) -> Path:
    """A fresh repository holding the project's code and params on the test profile (``edit`` may change the
    params further)."""
    for name in COPIED:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(
            src, dst
        )
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profile"] = "test"
    if edit:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = new_project(tmp_path_factory.mktemp("project"))
    _run([sys.executable, "-m", "dvc", "repro"], root)
    return root


@pytest.mark.slow
def test_repro_produces_the_contracted_outputs(project):
    corpus_files = sorted((project / "data/corpus").glob("*.parquet"))
    assert corpus_files and all(pq.read_schema(f) == schemas.CORPUS for f in corpus_files)
    assert (project / "models/lm/model.safetensors").is_file()
    queries = pq.read_table(project / "data/queries.parquet")
    assert queries.schema == schemas.QUERIES and queries.num_rows == 13  # the test profile's counts
    assert (project / "results/factors/manifest.json").is_file()
    n_docs = sum(pq.read_metadata(f).num_rows for f in corpus_files)
    con = duckdb.connect()
    scores = f"read_parquet('{project}/results/scores/shard=*/part.parquet')"  # influence's; variants beside
    segments = f"read_parquet('{project}/data/segments.parquet')"
    n_segments = con.execute(f"SELECT count(DISTINCT (query_id, segment)) FROM {segments}").fetchone()[0]
    count = con.execute(f"SELECT count(*) FROM {scores}").fetchone()[0]
    assert count == n_docs * (queries.num_rows + n_segments)  # each whole completion, and each of its segments
    # every query's segment scores add up to its whole completion's, document by document (the scorer sums
    # them into `all`; tests/test_influence.py checks that sum against the whole completion measured alone)
    worst = con.execute(f"""
        WITH parts AS (SELECT query_id, doc_id, sum(score) AS summed FROM {scores} WHERE segment <> 'all' GROUP BY ALL),
        whole AS (SELECT query_id, doc_id, score FROM {scores} WHERE segment = 'all')
        SELECT max(abs(summed - score) / scale) FROM parts JOIN whole USING (query_id, doc_id)
        JOIN (SELECT query_id, max(abs(score)) AS scale FROM whole GROUP BY ALL) USING (query_id)""").fetchone()[0]
    assert worst < 1e-4
    for name, schema in schemas.ANALYSIS.items():
        assert pq.read_schema(project / f"results/{name}.parquet") == schema, name
    findings = pq.read_table(project / "results/findings.parquet")
    n_scored = con.execute(f"SELECT count(DISTINCT segment) FROM {segments}").fetchone()[0]
    # the paper's, then one decomposition row per segment scored, for each method
    every_method = {"influence", "identity", "ekfac_cosine", "relatif", "bm25", "random", "index"}  # the registry's
    assert findings.num_rows == len(every_method) * (10 + n_scored)
    assert set(findings.column("method").to_pylist()) == every_method
    assert all(r["reason"] for r in findings.to_pylist() if r["verdict"] == "not testable")
    analysed = duckdb.connect().execute(
        f"SELECT DISTINCT method FROM read_parquet('{project}/results/query_stats.parquet')").fetchall()
    assert {m for (m,) in analysed} == every_method
    metrics = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project))
    shown = json.dumps(metrics)
    assert '"accuracy"' in shown and '"final_loss"' in shown and '"findings_reproduced"' in shown
    out = _run(["wherefrom", "sql", "--name", "answer_in_topk", "--param", "correct_only=false", "--format", "csv"],
               project)
    assert out.splitlines()[0].startswith("task,n_queries,top_k") and len(out.splitlines()) == 1 + 6  # six tasks
    rows = list(csv.DictReader(io.StringIO(_run(["wherefrom", "sql", "--name", "segment_nll", "--format", "csv"],
                                                project))))
    assert len(rows) == 6 * 5  # six tasks x (four segments and the largest token)
    for task in {r["task"] for r in rows}:  # each query's NLL is split over the four segments
        assert sum(float(r["mean_nll_share"]) for r in rows if r["task"] == task and r["segment"][0] != "(") \
            == pytest.approx(1, abs=0.003)


@pytest.mark.slow
def test_repro_renders_the_report(project):
    notebook = json.loads((project / "reports/out/procedural_vs_factual.ipynb").read_text())
    outputs = [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    page = (project / "reports/out/procedural_vs_factual.html").read_text()
    sections = re.findall(r"<h2[^>]*>(\d+)\. ", page)
    assert sections == [str(i) for i in range(1, 13)]
    figures = [s for s in re.split(r"<h2", page)[1:] if "data:image/png;base64," in s]
    assert len(figures) == 10  # every section but the findings table (2) and the example documents (10)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page)  # renders offline
    assert "<title>wherefrom: which documents taught the model" in page
    assert re.search(r"This run: commit .*, profile <code>test</code>, \d{4}-\d\d-\d\d \d\d:\d\d UTC; model pretrained "
                     r"here \(<code>models/lm</code>: Llama, 2 layers x 64, MLP 128, 0\.\d\dM parameters\), training "
                     r"seed 0; the embedded world \(<code>terse</code> style, seed 0\); the world's query suites", page)
    contents = re.search(r'<nav class="contents">(.*?)</nav>', page).group(1)
    assert re.findall(r'<li><a href="#(\d+)\.-', contents) == sections  # every section, linked
    findings = pq.read_table(project / "results/findings.parquet").to_pylist()
    assert all(f"<td>{f['claim']}</td>" in page for f in findings if f["segment"] == "all")  # claims, not ids
    assert "testable findings</strong> reproduce" in page and "make seeds" in page  # one run, and how to get more
    assert all(f"<td>{f['finding']}</td>" in page for f in findings if f["segment"] != "all")
    assert "-0.000" not in page
    methods = re.search(r"The methods \(<code>influence/methods/</code>\): (.*?)\.</p>", page).group(1)
    assert re.findall(r"<code>(\w+)</code>, ", methods) == ["influence", "identity", "ekfac_cosine", "relatif", "bm25",
                                                           "random", "index"]  # section 11 names every method


@pytest.mark.slow
def test_validate_and_a_seed_study_add_their_report_sections(project):
    """`make validate`'s stages on the demo's model (outside `dvc repro`'s default run; the lds stage has its own
    run and test, tests/test_validation.py), then the report again. Counterfactual: each method removes
    docs_per_group documents per group; an arm retrained again after its file is lost gives the same numbers, and
    the finished arms are not retrained. Tail-patch: every method's top 1 and top 10, with both optimizers. The
    report rendered again also shows a seed study's table in section 2 (the study's own tables, from this run's
    findings under 3 seeds)."""
    assert not (project / "results/counterfactual.parquet").exists()  # dvc repro alone does not retrain
    _run([sys.executable, "-m", "dvc", "repro", "validate/dvc.yaml:counterfactual", "validate/dvc.yaml:tail_patch"],
         project)
    table = pq.read_table(project / "results/counterfactual.parquet")
    assert table.schema == schemas.COUNTERFACTUAL
    rows = table.to_pylist()
    queries = pq.read_table(project / "data/queries.parquet").to_pylist()
    assert len(rows) == 3 * len(queries) and {r["method"] for r in rows} == {"influence", "bm25", "random"}
    size = yaml.safe_load((project / "params.yaml").read_text())["profiles"]["test"]["counterfactual"]["docs_per_group"]
    for r in rows:
        assert r["group_docs_removed"] == (size if r["task"] in ("factual", "arithmetic", "slope", "linear") else 0)
        assert size <= r["docs_removed"] <= 4 * size
        assert r["delta_nll"] == r["nll_after"] - r["nll_before"]
    before = {q["query_id"]: q["completion_nll"] for q in queries}
    assert all(r["nll_before"] == pytest.approx(before[r["query_id"]], rel=1e-9) for r in rows)  # the probe's NLL
    metrics = json.loads((project / "metrics/counterfactual.json").read_text())
    assert set(metrics["influence_vs_bm25"]) == {"factual", "reasoning"}

    (project / "results/counterfactual/random.parquet").unlink()
    out = _run(["wherefrom", "counterfactual"], project)
    assert "3 retrains of" in out and "(2 already done)" in out  # only random's arm is retrained
    assert re.search(r"random: \d+ documents \([\d,]+ tokens\) removed", out)
    assert pq.read_table(project / "results/counterfactual.parquet").to_pylist() == rows  # deterministic

    patched = pq.read_table(project / "results/validation/tail_patch.parquet")
    assert patched.schema == schemas.VALIDATION
    grouped = [q["query_id"] for q in queries if q["task"] in ("factual", "arithmetic", "slope", "linear")]
    cells = {(r["method"], r["test"], r["setting"]) for r in patched.to_pylist()}
    assert cells == {(m, t, s) for m in run_methods.selected(load_params(project / "params.yaml"))
                     for t in ("tail_patch_adamw", "tail_patch_sgd") for s in ("top=1", "top=10")}
    assert patched.num_rows == len(cells) * len(grouped) and None not in patched["value"].to_pylist()
    shown = _run(["wherefrom", "sql", "SELECT test, setting, count(*) AS n FROM validation GROUP BY ALL ORDER BY ALL",
                  "--format", "csv"], project).splitlines()  # tail-patch, and the counterfactual's leave-k-out
    per_cell = len(cells) // 4 * len(grouped)  # every method's rows
    assert shown == ["test,setting,n", f"leave_k_out,\"k={size}, demo\",{3 * len(grouped)}"] + [
        f"{t},top={k},{per_cell}" for t in ("tail_patch_adamw", "tail_patch_sgd") for k in (1, 10)]

    # a seed study beside the run: the study stage's own spread over this run's findings, moved per seed
    study = project / "results/seed_study"
    runs = [{**r, "seed": s, "value": None if r["value"] is None else r["value"] + 0.1 * s}
            for s in range(3) for r in pq.read_table(project / "results/findings.parquet").to_pylist()]
    spread = study_spread(pa.Table.from_pylist(runs, schema=schemas.FINDINGS_BY_SEED))
    write_parquet(spread, study / "finding_spread.parquet", schemas.FINDING_SPREAD)
    # and make validate's findings over its draws, exact attribution's among them (influence's rows, renamed)
    exact = study_spread(pa.Table.from_pylist(runs + [{**r, "method": "magic"} for r in runs
                                                       if r["method"] == "influence"], schema=schemas.FINDINGS_BY_SEED))
    write_parquet(exact, project / "results/validation/findings/finding_spread.parquet", schemas.FINDING_SPREAD)

    _run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "report"], project)
    page = (project / "reports/out/procedural_vs_factual.html").read_text()
    assert re.findall(r"<h2[^>]*>(\d+)\. ", page)[-3:] == ["13", "14", "15"]
    counted = [r for r in exact.to_pylist() if r["method"] == "magic" and r["segment"] == schemas.WHOLE
               and r["finding"] not in SHARED_TEST]
    always = [r["finding"] for r in counted if r["n_testable"] == r["n_holds"] == 3]
    under_exact = page.split("15. The finding under exact attribution")[-1]
    assert f"under magic {len(always)} of {len(counted)} findings held in every draw" in under_exact
    assert f"influence held in as many draws as magic on {len(counted)} of {len(counted)} findings" in under_exact
    assert "influence's removal hurt more than bm25's for" in page
    retraining = page.split("14. Which attribution predicts retraining?")[-1]  # the heading, after the contents
    table = retraining.split("</table>")[0]
    shown = re.findall(r"<th>([a-z_0-9]+)</th>\s*<td>", table)
    assert shown == run_methods.selected(load_params(project / "params.yaml"))
    best = patched.to_pandas().query("test == 'tail_patch_sgd' and setting == 'top=1'").groupby("method").value.mean()
    assert re.search(rf"tail-patch, SGD \(top=1\): highest <strong>[a-z_ ]*{best.idxmax()}", retraining)
    # each declared expectation, checked in this one draw
    assert len(re.findall(r"<td>identity highest</td>\s*<td>[01] of 1 draws</td>", retraining)) == 2  # top 1, 10

    findings_section = re.search(r"<h2[^>]*>2\. (.*?)<h2", page, re.DOTALL).group(1)
    assert "<b>The seed study: 3 training runs</b>" in findings_section
    table = findings_section.split("The seed study")[1].split("</table>")[0]
    assert re.findall(r"<th>([^<]*)</th>", table) == ["finding", "paper", "mean ± sd", "95% interval", "holds_in"]
    shown = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1],
                                                                          re.DOTALL)]
    expected = {r["finding"]: r for r in spread.to_pylist() if r["segment"] == schemas.WHOLE
                and r["method"] == "influence"}
    assert sorted(row[0] for row in shown) == sorted(expected)
    for row in shown:
        r = expected[row[0]]
        if r["mean"] is None:
            continue
        mean, sd = (float(v) for v in row[2].split(" ± "))
        assert mean == pytest.approx(r["mean"], abs=6e-4) and sd == pytest.approx(0.1, abs=6e-4)  # 0, +0.1, +0.2
        low, high = (float(v) for v in row[3].strip("[]").split(", "))
        assert (low, high) == pytest.approx((r["ci_low"], r["ci_high"]), abs=6e-4)
        assert row[4] == f"{r['n_holds']} of {r['n_testable']}"


@pytest.mark.slow
def test_status_and_metrics_after_a_run_are_clean(project):
    """The README's `dvc status dvc.yaml`: nothing to rerun after `dvc repro` (the validation and seed-study
    pipelines, which never ran here, are their own files)."""
    assert _run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project).strip() == \
        "Data and pipelines are up to date."
    # and the README's `dvc metrics show metrics/headline.json`: the numbers, with no warning about the metrics
    # of pipelines that never ran (plain `dvc metrics show` warns about those)
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "metrics/headline.json"], cwd=project,
                           env=run_env(), capture_output=True, text=True)
    assert shown.returncode == 0 and "failed" not in shown.stdout + shown.stderr, shown.stderr
    assert re.search(r"^metrics/headline\.json\s+-?\d", shown.stdout, re.MULTILINE), shown.stdout


def _payloads(node, name: str) -> list[dict]:
    """Every payload of metrics file ``name`` anywhere in `dvc exp show --json`'s output."""
    found = []
    if isinstance(node, dict):
        if name in node and isinstance(node[name], dict):
            found.append(node[name].get("data", {}))
        for value in node.values():
            found += _payloads(value, name)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value, name)
    return found


# the README's command: the headline numbers and what changed, in a terminal's width
EXP_SHOW = ["exp", "show", "--no-pager", "--only-changed", "--drop", r"data/|^(findings|classifier)\.|_s$", "--keep",
            "^(findings_|same_task_r|factual_r)"]


@pytest.mark.slow
def test_experiments_record_numeric_metrics_and_plots(project, tmp_path):
    """Two `dvc exp run -S` in a committed copy: each experiment carries its own headline numbers, as
    numbers, and `dvc plots show` finds the loss curve, the top-p% curves and the confusion matrix."""
    exp = tmp_path / "exp"
    shutil.copytree(project, exp, ignore=shutil.ignore_patterns(".git"))
    shutil.copy(REPO / ".gitignore", exp / ".gitignore")
    text = (REPO / "params.yaml").read_text()  # as written by hand (the fixture's copy went through PyYAML)
    (exp / "params.yaml").write_text(text.replace("\nprofile: demo", "\nprofile: test", 1))
    _run(["git", "init", "-q"], exp)
    _run(["git", "config", "user.name", "wherefrom tests"], exp)
    _run(["git", "config", "user.email", "tests@wherefrom.invalid"], exp)
    _run([sys.executable, "-m", "dvc", "repro"], exp)  # the fixture's run of these params, committed as the baseline
    _run(["git", "add", "-A"], exp)
    _run(["git", "commit", "-qm", "base"], exp)
    before = (exp / "params.yaml").read_text()
    for k in (20, 30):
        _run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"analysis.top_k={k}"], exp)
    after = (exp / "params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(before.splitlines(), after) if a != b]
    assert len(after) == len(before.splitlines()) and [b.split("#")[0].split() for _, b in changed] == [
        ["top_k:", "30"]
    ], f"dvc exp run -S rewrote more of params.yaml than the value it set: {changed[:3]}"
    shown = json.loads(_run([sys.executable, "-m", "dvc", "exp", "show", "--json"], exp))
    headlines, details = _payloads(shown, "metrics/headline.json"), _payloads(shown, "metrics/findings.json")
    assert len(headlines) >= 4 and len(details) == len(headlines)  # the workspace, the base commit, both experiments
    for h, d in zip(headlines, details):
        assert isinstance(h["findings_reproduced"], int) and isinstance(h["findings_total"], int)
        assert all(v is None or isinstance(v, float) for v in (h["same_task_r"], h["factual_r"]))
        assert all(v is None or isinstance(v, float) for v in d["findings"].values())
    table = subprocess.run([sys.executable, "-m", "dvc", *EXP_SHOW], cwd=exp, env={**run_env(), "COLUMNS": "160"},
                           capture_output=True, text=True, check=True).stdout
    lines = table.splitlines()
    assert max(map(len, lines)) <= 160 and "…" not in table, table
    header = next(line for line in lines if "Experiment" in line)
    for column in ("findings_reproduced", "findings_testable", "same_task_r", "factual_r", "top_k"):
        assert column in header, header
    base = re.search(r"^\s*(?:master|main)\s.*$", table, re.MULTILINE)  # the committed run, which shows its numbers
    assert base and "!" not in base.group() and re.search(r"\d\s+\d", base.group()), table
    diff = _run([sys.executable, "-m", "dvc", "exp", "diff"], exp)
    assert "not supported" not in diff and "top_k" in diff, diff
    plots = json.loads(_run([sys.executable, "-m", "dvc", "plots", "show", "--json"], exp))
    shown = json.dumps(plots)
    for name in ("pretrain_loss.csv", "top_mass.csv", "confusion.csv"):
        assert name in shown, name


@pytest.mark.slow
def test_repro_again_is_cached_and_a_param_reruns_only_its_stage(project):
    def reran(out):
        return {s for s in ("corpus", "pretrain", "probe", "factors", "scores", "index", "baselines", "analyze",
                            "report")
                if f"Running stage '{s}'" in out}

    assert reran(_run([sys.executable, "-m", "dvc", "repro"], project)) == set()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["queries"]["max_new_tokens"] = 99  # overridden by the active profile: changes nothing
    params["profiles"]["demo"] = {"pretrain": {"steps": 1}}  # another profile: changes nothing either
    params["dask"]["workers"] = 2  # where scores are computed, not what they are
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert reran(_run([sys.executable, "-m", "dvc", "repro"], project)) == set()
    params["profiles"]["test"]["analysis"] = {"neighbours": 3}  # the active profile: the analysis and its report
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert reran(_run([sys.executable, "-m", "dvc", "repro"], project)) == {"analyze", "report"}
