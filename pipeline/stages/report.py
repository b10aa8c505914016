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
import tempfile
from pathlib import Path

from pipeline.core.atomic import atomic_path
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError

TEMPLATE = Path(__file__).resolve().parents[2] / "reports" / "offline.html.j2"  # no CDN scripts


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
                            "baselines": list(params.baselines.methods), "docs_shown": cfg.docs_shown})
        except papermill.PapermillExecutionError as err:
            raise WherefromError(f"{source}: cell {err.exec_count} failed: {err.ename}: {err.evalue}") from None
        exporter = HTMLExporter(template_file=str(TEMPLATE), exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(nbformat.read(done, as_version=4))
        for path, content in ((executed, done.read_text()), (page, body)):
            with atomic_path(path) as tmp_path:
                tmp_path.write_text(content)
    print(f"report: {page} ({len(body) / 1e6:.1f} MB, self-contained; open it in a browser)")
    return page
