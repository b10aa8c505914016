"""The report stage's failure modes (the full report is rendered by the end-to-end test)."""

from __future__ import annotations

import pytest
from conftest import make_params

from pipeline.core.errors import WherefromError
from pipeline.stages import report


def test_a_failing_cell_is_one_line_naming_the_notebook_and_nothing_is_written(tmp_path):
    notebook = tmp_path / "broken.py"
    notebook.write_text('# %% tags=["parameters"]\nresolved = None\n\n# %%\nraise ValueError("no results here")\n')
    params = make_params(tmp_path, report={"notebook": str(notebook), "out_dir": str(tmp_path / "out")})
    with pytest.raises(WherefromError, match=r"broken.py: cell \d+ failed: ValueError: no results here"):
        report.run(params)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_missing_notebook_is_named(tmp_path):
    params = make_params(tmp_path, report={"notebook": str(tmp_path / "nope.py")})
    with pytest.raises(WherefromError, match=r"nope.py: no such notebook \(report.notebook\)"):
        report.run(params)
