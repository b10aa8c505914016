"""The house rules, checked from the code itself: each stage's DVC deps cover the code it imports, no
stage imports another, ``influence`` stands on ``pipeline.core`` alone, one list of stages, and
``params.yaml``'s demo values are the typed configs' defaults."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from pipeline import cli
from pipeline.core.config import STAGE_SECTIONS, Params, load_params

PACKAGES = ("pipeline", "influence", "queries")
# every stage: the main pipeline's, then those kept out of `dvc repro`'s default run (validation, the seed study);
# a foreach stage's definition is its `do`
DVC = {name: stage.get("do", stage) for f in ("dvc.yaml", "validate/dvc.yaml", "seeds/dvc.yaml") for name, stage in
       yaml.safe_load((REPO / f).read_text())["stages"].items()}


def module_file(name: str) -> Path | None:
    """The project file that defines module ``name``, or None for a module from elsewhere."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_files(path: Path) -> set[Path]:
    """The project files ``path`` imports anywhere in it (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out |= {f for f in map(module_file, names) if f is not None}
    return out


def closure(roots: set[Path]) -> set[Path]:
    seen, todo = set(), list(roots)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_files(path)
    return seen


def stage_roots(stage: str) -> set[Path]:
    """A stage's module, the stages it runs as steps (``STEPS``: the seed study), and any Python file it lists
    itself (the report notebook)."""
    listed = {REPO / d for d in DVC[stage].get("deps", []) if d.endswith(".py") and d.split("/")[0] not in PACKAGES}
    module = ast.parse((REPO / "pipeline" / "stages" / f"{stage}.py").read_text())
    steps = next((ast.literal_eval(node.value) for node in module.body if isinstance(node, ast.Assign)
                  and [getattr(t, "id", None) for t in node.targets] == ["STEPS"]), ())
    return {REPO / "pipeline" / "stages" / f"{s}.py" for s in (stage, *steps)} | listed


def uncovered(stage: str, deps: list[str]) -> list[str]:
    paths = [REPO / d for d in deps]
    return sorted(str(f.relative_to(REPO)) for f in closure(stage_roots(stage))
                  if not any(f == p or p in f.parents for p in paths))


@pytest.mark.parametrize("stage", sorted(DVC))
def test_each_stage_depends_on_all_the_code_it_imports(stage):
    assert uncovered(stage, DVC[stage].get("deps", [])) == []


def test_the_deps_check_catches_a_missing_dependency():
    deps = [d for d in DVC["factors"]["deps"] if d not in ("influence/fisher.py", "influence")]
    assert "influence/fisher.py" in uncovered("factors", deps)


def test_no_stage_imports_another_and_influence_imports_only_core():
    stages = set((REPO / "pipeline" / "stages").glob("[!_]*.py"))
    for path in stages:
        assert not (imported_files(path) & stages), path.name
    for path in (REPO / "influence").glob("*.py"):
        for f in closure({path}):
            part = f.relative_to(REPO).parts
            assert part[0] != "pipeline" or part[1] == "core", f"{path.name} imports {f.relative_to(REPO)}"


def test_dvc_the_cli_and_the_configs_name_the_same_stages():
    assert list(DVC) == list(cli.STAGES) == ["params", *STAGE_SECTIONS]
    assert {p.stem for p in (REPO / "pipeline" / "stages").glob("[!_]*.py")} == set(DVC)


def test_params_yaml_holds_the_configs_defaults():
    """The typed configs are the one source of the defaults; params.yaml spells out the demo's values."""
    given = dataclasses.asdict(load_params(REPO / "params.yaml"))
    defaults = dataclasses.asdict(Params())
    given.pop("profiles"), defaults.pop("profiles")
    assert given == defaults
