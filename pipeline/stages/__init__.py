"""One module per DVC stage, named as in the one list of stages (``pipeline/core/stages.py``). Each has
``run(params)``; a stage imports libraries, never another stage: one that runs others as steps (a seed's run)
runs them through ``run_stage``, as the CLI does."""

from __future__ import annotations

import importlib

from pipeline.core import stages
from pipeline.core.config import Params


def run_stage(name: str, params: Params, *args) -> None:
    """Run stage ``name`` on ``params``. Its module is imported now, one stage per run: together the stages import
    torch, Dask, kronfluence and papermill (seconds). The list's names and these modules are held to each other by
    tests/test_layout.py."""
    importlib.import_module(stages.get(name).module).run(params, *args)
