"""Stage `report`: execute the report notebook on this run's results and render it as one HTML file.

    wherefrom report            # reports/procedural_vs_factual.py -> reports/out/procedural_vs_factual.{ipynb,html}

The notebook is kept in git only as a jupytext ``py:percent`` file. papermill executes it with this
run's parameters (the resolved params, so the notebook reads the same paths and views as ``wherefrom
sql``). nbconvert then renders it without the code cells, as a self-contained HTML file: figures are
embedded PNGs and nothing loads from the network. A notebook cell that fails stops the stage with the
cell's error, and neither output is replaced.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from influence import methods
from pipeline.core.atomic import atomic_path
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.runs import methods as run_methods

TEMPLATE = Path(__file__).resolve().parents[2] / "reports" / "offline.html.j2"  # no CDN scripts
TITLE = "wherefrom: which documents taught the model, facts or procedures?"


def provenance(params: Params) -> str:
    """Which code, profile and day produced the page: the commit (marked if the tree had changes)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        commit += " with uncommitted changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (no git commit here)"
    return (f"commit {commit}, profile `{params.profile}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
            + describe_run(params))


def describe_run(params: Params) -> str:
    """What was attributed: the model, its training seed, the corpus and the queries."""
    if params.model.name_or_path:
        model = f"model `{params.model.name_or_path}`"
    else:
        m = params.model
        metrics = Path(params.pretrain.metrics)
        size = json.loads(metrics.read_text()).get("n_params") if metrics.is_file() else None
        model = (f"model pretrained here (`{m.dir}`: Llama, {m.n_layers} layers x {m.hidden_size}, MLP "
                 f"{m.intermediate_size}" + (f", {size / 1e6:.2f}M parameters" if size else "")
                 + f"), training seed {params.training_seed}")
    corpus = (f"corpus `{params.corpus.dataset}`" if params.corpus.dataset
              else f"the embedded world (`{params.corpus.style}` style, seed {params.seed})")
    queries = f"queries `{params.queries.file}`" if params.queries.file else "the world's query suites"
    return f"{model}; {corpus}; {queries}"


_SECTION = re.compile(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"')


def with_contents(body: str) -> str:
    """The page with a linked table of its sections (whichever ran: section 13 only after make validate)
    before its first section."""
    sections = _SECTION.findall(body)
    if not sections:
        return body
    items = "".join(f'<li><a href="#{anchor}">{title}</a></li>' for anchor, title in sections)
    contents = f'<nav class="contents"><p><b>Contents</b></p><ul>{items}</ul></nav>'
    first = body.index(f'<h2 id="{sections[0][0]}"')
    cell = body.rfind('<div class="jp-Cell', 0, first)  # before the section's whole cell, not inside it
    at = cell if cell >= 0 else first
    return body[:at] + contents + body[at:]


def run(params: Params) -> Path:
    import jupytext
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    cfg = params.report
    source = Path(cfg.notebook)
    if not source.is_file():
        raise WherefromError(f"{source}: no such notebook (report.notebook)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    executed, page = out / f"{source.stem}.ipynb", out / f"{source.stem}.html"
    with tempfile.TemporaryDirectory() as tmp:
        unexecuted, done = Path(tmp) / "notebook.ipynb", Path(tmp) / "executed.ipynb"
        jupytext.write(jupytext.read(source), unexecuted)
        try:
            papermill.execute_notebook(
                str(unexecuted), str(done), kernel_name="python3", language="python", cwd=str(Path.cwd()),
                progress_bar=False,
                # the kernel's own log (a warning that it talks over local TCP unencrypted, a KeyboardInterrupt at
                # shutdown) is not the report's business: a failing cell is reported below
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                parameters={"resolved": json.loads(json.dumps(dataclasses.asdict(params))),  # tuples as lists
                            "method": methods.PAPER,
                            "baselines": run_methods.selected(params)[1:], "docs_shown": cfg.docs_shown,
                            "provenance": provenance(params)})
        except papermill.PapermillExecutionError as err:
            raise WherefromError(f"{source}: cell {err.exec_count} failed: {err.ename}: {err.evalue}") from None
        exporter = HTMLExporter(template_file=str(TEMPLATE), exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
        notebook = nbformat.read(done, as_version=4)
        notebook.metadata["title"] = TITLE  # the page's <title>, else "Notebook"
        body, _ = exporter.from_notebook_node(notebook)
        body = with_contents(body)
        for path, content in ((executed, done.read_text()), (page, body)):
            with atomic_path(path) as tmp_path:
                tmp_path.write_text(content)
    print(f"report: {page} ({len(body) / 1e6:.1f} MB, self-contained; open it in a browser)")
    return page
