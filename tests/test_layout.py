"""The house rules, checked from the code itself: each stage's DVC deps cover the code it imports, no
stage imports another, ``influence`` stands on ``pipeline.core`` alone, one list of stages, and
``params.yaml``'s demo values are the typed configs' defaults."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from pipeline import cli
from pipeline.core.config import READ_BY_DVC, STAGE_SECTIONS, Params, load_params

PACKAGES = ("pipeline", "influence", "queries")
# every stage: the main pipeline's, then those kept out of `dvc repro`'s default run (validation, the seed study);
# a foreach stage's definition is its `do`
DVC_FILES = ("dvc.yaml", "validate/dvc.yaml", "seeds/dvc.yaml")


def _resolved(text: str) -> str:
    """A dvc.yaml with its ``${section.key}`` values from params.yaml's defaults, as DVC templates them."""
    defaults = dataclasses.asdict(Params())
    return re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(defaults[m.group(1)][m.group(2)]), text)


DVC = {name: stage.get("do", stage) for f in DVC_FILES for name, stage in
       yaml.safe_load(_resolved((REPO / f).read_text()))["stages"].items()}
DVC_MAIN = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])  # `dvc repro`'s default run


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
    """The project files ``path`` imports anywhere in it (inside functions too), except for type checkers only
    (``if TYPE_CHECKING:``): those never run, so they change nothing a stage computes."""
    tree = ast.parse(path.read_text())
    typing_only = {n for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if node in typing_only:
            continue
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


def test_the_stages_run_without_torch_import_none_of_it_anywhere():
    """`wherefrom` pins torch's threads except for these stages: a torch import in their code would run unpinned."""
    for name in cli.WITHOUT_TORCH:
        for f in closure({REPO / "pipeline" / "stages" / f"{name}.py"}):
            tops = {n.split(".")[0] for node in ast.walk(ast.parse(f.read_text()))
                    for n in ([a.name for a in node.names] if isinstance(node, ast.Import)
                              else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])}
            assert not tops & {"torch", "transformers", "kronfluence"}, f"{name}: {f.relative_to(REPO)}"


# the house's floors, lowest first: a module imports from its own room or a lower floor, never from a higher one
FLOORS = (
    ("pipeline/core", "pipeline/__init__.py"),
    ("influence", "pipeline/world"),
    ("queries",),
    ("pipeline/analysis", "pipeline/sql", "pipeline/ask.py"),
    ("pipeline/stages",),
    ("pipeline/cli.py", "pipeline/bench.py", "pipeline/bench_index.py"),
    ("pipeline/__main__.py",),
)


def room(path: Path) -> str:
    """The room a project file lives in: its folder under pipeline/, or its top folder, or a module of its own."""
    parts = path.relative_to(REPO).parts
    return "/".join(parts[:2]) if parts[0] == "pipeline" else parts[0]


def upward_imports(files: list[Path], imports=imported_files) -> list[str]:
    floor = {r: i for i, rooms in enumerate(FLOORS) for r in rooms}
    assert {room(f) for f in files} <= set(floor), f"rooms on no floor: {sorted({room(f) for f in files} - set(floor))}"
    return sorted(f"{f.relative_to(REPO)} imports {g.relative_to(REPO)}" for f in files for g in imports(f)
                  if room(g) != room(f) and floor[room(g)] >= floor[room(f)])


def test_imports_run_down_the_floors():
    assert upward_imports([f for pkg in PACKAGES for f in (REPO / pkg).rglob("*.py")]) == []


def test_the_floors_check_catches_an_upward_import():
    world, suites = REPO / "pipeline" / "world" / "tasks.py", REPO / "queries" / "suites.py"
    assert upward_imports([world], imports=lambda f: {suites}) == [
        "pipeline/world/tasks.py imports queries/suites.py"]


def test_dvc_the_cli_and_the_configs_name_the_same_stages():
    assert list(DVC) == list(cli.STAGES) == ["params", *STAGE_SECTIONS]
    assert {p.stem for p in (REPO / "pipeline" / "stages").glob("[!_]*.py")} == set(DVC)


def test_the_readmes_dvc_dag_is_the_main_pipeline_in_mermaid():
    """`dvc dag --md dvc.yaml`: one node per stage of the main pipeline (not the seed study's or the validation's,
    which fill the plain `dvc dag` too), and an edge wherever a stage reads another's output: `params` feeds
    every stage its resolved settings, so its edges are the widest part of the chart."""
    assert "dvc dag --md dvc.yaml" in (REPO / "README.md").read_text()
    out = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md", "dvc.yaml"], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"}, check=True).stdout
    nodes = dict(re.findall(r'^\s*(node\d+)\["([^"]+)"\]', out, re.MULTILINE))
    edges = {(nodes[a], nodes[b]) for a, b in re.findall(r"^\s*(node\d+)-->(node\d+)", out, re.MULTILINE)}
    assert out.startswith("```mermaid") and sorted(nodes.values()) == sorted(DVC_MAIN)
    assert {("params", stage) for stage in DVC_MAIN if stage != "params"} <= edges
    assert {("scores", "analyze"), ("baselines", "analyze"), ("analyze", "report")} <= edges


def test_params_yaml_holds_the_configs_defaults():
    """The typed configs are the one source of the defaults; params.yaml spells out the demo's values."""
    given = dataclasses.asdict(load_params(REPO / "params.yaml"))
    defaults = dataclasses.asdict(Params())
    given.pop("profiles"), defaults.pop("profiles")
    assert given == defaults


def test_dvc_reads_every_output_path_from_params_yaml():
    """Each path DVC tracks is templated from its params.yaml field, never written out again: no dvc.yaml
    holds a path field's default value, and each field is read somewhere."""
    text = "".join((REPO / f).read_text() for f in DVC_FILES)
    defaults = dataclasses.asdict(Params())
    for section, keys in READ_BY_DVC.items():
        for key in keys:
            if key == "seeds":
                continue
            assert f"${{{section}.{key}}}" in text, f"{section}.{key} is not read by any dvc.yaml"
            assert not re.search(rf"^\s*- {re.escape(defaults[section][key])}(:|\s|$)", text, re.MULTILINE), \
                f"{section}.{key}'s default {defaults[section][key]!r} is written out in a dvc.yaml"


def test_an_edited_output_path_moves_the_stage_in_dvc_and_in_the_params(tmp_path):
    """Edit two output paths in params.yaml: DVC's stages (as DVC resolves them) and the params the stages
    read name the new paths, and nothing names the old ones."""
    from dvc.repo import Repo
    from test_pipeline_e2e import new_project

    def edit(params):
        params["corpus"]["out_dir"] = "elsewhere/corpus"
        params["analysis"]["out_dir"] = "elsewhere/results"

    root = new_project(tmp_path, edit)
    with Repo(str(root)) as repo:
        outs = {str(o.def_path) for stage in repo.index.stages for o in stage.outs}
        deps = {str(d.def_path) for stage in repo.index.stages for d in stage.deps}
    params = load_params(root / "params.yaml")
    assert params.corpus.out_dir == "elsewhere/corpus" and params.analysis.out_dir == "elsewhere/results"
    assert "elsewhere/corpus" in outs and "elsewhere/corpus" in deps and "data/corpus" not in outs | deps
    assert "elsewhere/results/findings.parquet" in outs and "results/findings.parquet" not in outs | deps


def test_the_readme_is_a_users_guide_of_at_most_20000_characters():
    assert len((REPO / "README.md").read_bytes()) <= 20_000  # bytes: at most as many characters
