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
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.atomic import atomic_path
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError

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
    return f"commit {commit}, profile `{params.profile}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"


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
                parameters={"resolved": json.loads(json.dumps(dataclasses.asdict(params))),  # tuples as lists
                            "method": "influence",
                            "baselines": list(params.baselines.methods), "docs_shown": cfg.docs_shown,
                            "provenance": provenance(params)})
        except papermill.PapermillExecutionError as err:
            raise WherefromError(f"{source}: cell {err.exec_count} failed: {err.ename}: {err.evalue}") from None
        exporter = HTMLExporter(template_file=str(TEMPLATE), exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
        notebook = nbformat.read(done, as_version=4)
        notebook.metadata["title"] = TITLE  # the page's <title>, else "Notebook"
        body, _ = exporter.from_notebook_node(notebook)
        for path, content in ((executed, done.read_text()), (page, body)):
            with atomic_path(path) as tmp_path:
                tmp_path.write_text(content)
    print(f"report: {page} ({len(body) / 1e6:.1f} MB, self-contained; open it in a browser)")
    return page
