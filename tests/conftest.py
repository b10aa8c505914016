"""Shared fixtures: the `test` profile of the repository's own params.yaml, and a tiny trained model."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from influence import methods
from pipeline.core.config import READ_BY_DVC, Params, parse_params

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # two pytest processes or a background job must not oversubscribe 2 cores
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most slow tests first: `make test` (pytest-xdist, --dist loadfile --no-loadscope-reorder)
    hands files to its workers in this order, so the long files start early and the short ones fill in at the
    end, rather than one long file running alone while the other worker idles."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each file's tests keep their order


def make_params(tmp: Path, **overrides) -> Params:
    """The repository's `test` profile with all outputs under ``tmp`` (plus optional section overrides)."""
    return parse_params(raw_params(tmp, **overrides))


def write_params(tmp: Path, **overrides) -> Path:
    """The same, as a params file (for the CLI)."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(tmp, **overrides), sort_keys=False))
    return path


def raw_params(tmp: Path, **overrides) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "test"
    raw["corpus"]["out_dir"] = str(tmp / "data/corpus")
    raw["model"]["dir"] = str(tmp / "models/lm")
    raw["queries"]["out"] = str(tmp / "data/queries.parquet")
    raw["queries"]["segments"] = str(tmp / "data/segments.parquet")
    raw["queries"]["metrics"] = str(tmp / "metrics/probe.json")
    raw["pretrain"]["metrics"] = str(tmp / "metrics/pretrain.json")
    raw["pretrain"]["loss_curve"] = str(tmp / "metrics/pretrain_loss.csv")
    raw["scores"]["metrics"] = str(tmp / "metrics/scores.json")
    raw["influence"]["factors_dir"] = str(tmp / "results/factors")
    raw["scores"]["out_dir"] = str(tmp / "results/scores")
    # no index method unless a test builds an index (test_gradient_index); the end-to-end test runs the default
    raw["index"].update(out_dir=str(tmp / "results/index"), metrics=str(tmp / "metrics/index.json"),
                        score_queries=False)
    raw["analysis"].update(out_dir=str(tmp / "results"), sql_dir=str(REPO / "reports/sql"),
                           metrics_dir=str(tmp / "metrics"))
    raw["baselines"]["out_dir"] = str(tmp / "results/baselines")
    raw["exact"].update(out_dir=str(tmp / "results/exact"), metrics=str(tmp / "metrics/exact.json"))
    raw["counterfactual"].update(
        out=str(tmp / "results/counterfactual.parquet"),
        arms_dir=str(tmp / "results/counterfactual"),
        metrics=str(tmp / "metrics/counterfactual.json"),
    )
    raw["study"].update(runs_dir=str(tmp / "results/seeds"), out_dir=str(tmp / "results/seed_study"),
                        metrics=str(tmp / "metrics/seeds.json"))
    raw["validation"].update(out_dir=str(tmp / "results/validation"), metrics_dir=str(tmp / "metrics"))
    profile = raw["profiles"]["test"]
    for section, values in overrides.items():  # into the profile, which is applied last; paths at the top level
        if isinstance(values, dict):
            paths = {k: v for k, v in values.items() if k in READ_BY_DVC.get(section, ())}
            raw[section].update(paths)
            profile.setdefault(section, {}).update({k: v for k, v in values.items() if k not in paths})
        else:
            profile[section] = values
    return raw


def in_eigenbasis(vectors: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``Q diag(values) Q^T`` in float64: how two eigendecompositions' eigenvectors are compared. Unlike ``Q Q^T``
    (the identity for any full basis) it moves with any eigenvector that moves, and not with a sign flip or a
    rotation inside an eigenspace, which ``eigh`` may choose either way."""
    vectors = vectors.double()
    return vectors @ torch.diag(values.double()) @ vectors.T


@contextlib.contextmanager
def external_dask_cluster(tmp: Path) -> Iterator[str]:
    """`dask scheduler` and one `dask worker` started by hand, the worker in another directory, as on a real
    cluster; yields the scheduler's address."""
    bin_dir = Path(sys.executable).parent
    scheduler_file = tmp / "scheduler.json"
    elsewhere = tmp / "worker-home"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    scheduler = subprocess.Popen([bin_dir / "dask", "scheduler", "--scheduler-file", scheduler_file, "--port", "0",
                                  "--no-dashboard"], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.time() + 60
        while not scheduler_file.is_file() and time.time() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen([bin_dir / "dask", "worker", "--scheduler-file", scheduler_file, "--nthreads", "1",
                                   "--no-dashboard"], cwd=elsewhere, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        yield json.loads(scheduler_file.read_text())["address"]
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


@pytest.fixture
def toy_method():
    """A corpus method registered the way a plugin would: each document scored by its id's parity."""
    method = methods.register(methods.Method("toy", "1 for even doc ids, else 0", from_corpus=lambda inputs: (
        lambda shard: np.tile(np.asarray(shard.doc_ids) % 2 == 0, (len(inputs.rows), 1)).astype(float))))
    yield method
    del methods.REGISTRY[method.name]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """corpus + pretrain on the test profile, run once for the whole session."""
    from pipeline.stages import corpus, pretrain

    params = make_params(tmp_path_factory.mktemp("trained"))
    corpus.run(params)
    pretrain.run(params)
    return params
