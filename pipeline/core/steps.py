"""Running pipeline stages as steps of a larger run (a seed of the study), each resumable on its own.

A step is a stage's ``run`` on params of its own, in this process (importing torch and transformers
again for each step would cost ~9 s a step); the params are also written beside the run as a params
file, so that ``wherefrom STAGE --params RUN/params.yaml`` repeats any step by hand. A finished step
leaves a marker holding a key of its settings and of every step before it, so a rerun, after a crash or
a kill -9, skips what is done and redoes what changed; a step that was interrupted resumes by its own
rules (the scores stage from its complete shards).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from pipeline.core.atomic import atomic_path
from pipeline.core.config import Params
from pipeline.core.stages import resolved

MARKERS = ".done"  # one marker file per finished step, inside the run's directory


def write_params(params: Params, path: Path) -> Path:
    """``params`` as a params file whose selected profile is already applied."""
    raw = json.loads(json.dumps(dataclasses.asdict(params)))  # tuples as lists, which YAML can write
    raw["profiles"] = {} if params.profile == "demo" else {params.profile: {}}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def step_keys(params: Params, steps: tuple[str, ...], start: str) -> dict[str, str]:
    """Each step's key: its resolved settings chained after the previous step's key, from ``start`` (a hash of
    the inputs every step reads, such as the corpus)."""
    keys, key = {}, start
    for step in steps:
        key = hashlib.sha256((key + json.dumps(resolved(params, step), sort_keys=True)).encode()).hexdigest()[:16]
        keys[step] = key
    return keys


def run_steps(params: Params, steps: tuple[str, ...], run: Path, start: str, label: str,
              run_stage: Callable[[str, Params], None], resume: bool = True) -> list[str]:
    """Run each stage in ``steps`` not yet done under its key (with ``resume``; without, every step runs), each by
    ``run_stage`` (``pipeline.stages.run_stage``: the caller's floor runs stages, not this one); returns the steps
    run."""
    write_params(params, run / "params.yaml")
    done_dir = run / MARKERS
    ran = []
    for step, key in step_keys(params, steps, start).items():
        marker = done_dir / step
        if resume and marker.is_file() and marker.read_text() == key:
            print(f"{label}: {step} already done")
            continue
        print(f"{label}: {step}", flush=True)
        run_stage(step, params)
        with atomic_path(marker) as tmp:
            tmp.write_text(key)
        ran.append(step)
    return ran
