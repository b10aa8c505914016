"""The house rules, checked from the code itself: each stage's DVC deps cover the code it imports, no
stage imports another, ``influence`` stands on ``pipeline.core`` alone and takes settings of its own, one list of
stages and one of methods with no name written outside them, and ``params.yaml``'s demo values are the typed
configs' defaults."""

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

from influence.methods import REGISTRY
from pipeline.core.config import READ_BY_DVC, Params, load_params
from pipeline.core.stages import STAGES

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
    deps = [d for d in DVC["factors"]["deps"] if d not in ("influence/curvature/fisher.py", "influence")]
    assert "influence/curvature/fisher.py" in uncovered("factors", deps)


def test_no_stage_imports_another_and_influence_imports_only_core():
    stages = set((REPO / "pipeline" / "stages").glob("[!_]*.py"))
    for path in stages:
        assert not (imported_files(path) & stages), path.name
    for path in (REPO / "influence").rglob("*.py"):
        for f in closure({path}):
            part = f.relative_to(REPO).parts
            assert part[0] != "pipeline" or part[1] == "core", f"{path.name} imports {f.relative_to(REPO)}"


# What the engine may use of pipeline/core: errors, atomic writes, schemas, corpus reading, the LM helpers and the
# training run its retrains repeat. Not the params, nor the pipeline's own machinery (stages, steps, draws).
PIPELINE_ONLY = {"pipeline/core/steps.py", "pipeline/core/seeds.py", "pipeline/core/stages.py"}


def test_the_engine_takes_its_own_settings_not_the_pipelines_params():
    for path in (REPO / "influence").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
        assert "Params" not in names, f"{path.relative_to(REPO)} takes the pipeline's Params"
        used = {str(f.relative_to(REPO)) for f in imported_files(path)}
        assert not used & PIPELINE_ONLY, f"{path.relative_to(REPO)} imports {sorted(used & PIPELINE_ONLY)}"


def test_the_stages_run_without_torch_import_none_of_it_anywhere():
    """`wherefrom` pins torch's threads except for these stages: a torch import in their code would run unpinned."""
    for name in (name for name, stage in STAGES.items() if not stage.torch):
        for f in closure({REPO / "pipeline" / "stages" / f"{name}.py"}):
            tops = {n.split(".")[0] for node in ast.walk(ast.parse(f.read_text()))
                    for n in ([a.name for a in node.names] if isinstance(node, ast.Import)
                              else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])}
            assert not tops & {"torch", "transformers", "kronfluence"}, f"{name}: {f.relative_to(REPO)}"


# the house's floors, lowest first: a module imports from its own room or a lower floor, never from a higher one.
# influence's wings by concern stand on its shared modules (task, data, shards, cluster, measurements).
FLOORS = (
    ("pipeline/core", "pipeline/__init__.py"),
    ("influence", "pipeline/world"),
    ("influence/methods", "influence/curvature", "influence/retraining"),
    ("influence/index", "influence/exact"),
    ("influence/scoring",),
    ("influence/workspace.py",),  # the engine on its own, over every wing
    ("queries", "pipeline/runs"),
    ("pipeline/analysis", "pipeline/sql", "pipeline/ask.py"),
    ("pipeline/stages",),
    ("pipeline/cli.py", "pipeline/bench"),
    ("pipeline/__main__.py",),
)


ROOMS = {r for rooms in FLOORS for r in rooms}


def room(path: Path) -> str:
    """The room a project file lives in: its folder under pipeline/ or influence/ (a wing), or its top folder, or a
    module of its own."""
    parts = path.relative_to(REPO).parts
    wing = parts[0] == "pipeline" or (parts[0] == "influence" and (len(parts) > 2 or "/".join(parts) in ROOMS))
    return "/".join(parts[:2]) if wing else parts[0]


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


def test_the_list_of_stages_is_dvcs_and_each_names_its_module():
    assert list(DVC) == list(STAGES)
    assert {p.stem for p in (REPO / "pipeline" / "stages").glob("[!_]*.py")} == set(STAGES)
    assert all(module_file(s.module) == REPO / "pipeline" / "stages" / f"{name}.py" for name, s in STAGES.items())
    for path in (REPO / "pipeline" / "stages").glob("[!_]*.py"):  # the steps a stage runs are stages too
        module = ast.parse(path.read_text())
        steps = next((ast.literal_eval(node.value) for node in module.body if isinstance(node, ast.Assign)
                      and [getattr(t, "id", None) for t in node.targets] == ["STEPS"]), ())
        assert set(steps) <= set(STAGES), path.name


# Where the lists live: the stages' table and the methods' registry. params' schema may name a method as a default.
LISTS = ("pipeline/core/stages.py", "pipeline/core/config.py", "influence/methods/")
SECTIONS = {f.name for f in dataclasses.fields(Params)}
CONFIG = ast.parse((REPO / "pipeline" / "core" / "config.py").read_text())
CHOICES = {c.value for node in ast.walk(CONFIG) if isinstance(node, ast.Subscript)  # a setting's Literal choices
           and getattr(node.value, "id", None) == "Literal" for c in ast.walk(node.slice)
           if isinstance(c, ast.Constant)}
KINDS = {"gradients", "corpus", "index"}  # Method.kind


def _side_by_side(node: ast.AST) -> list[ast.AST]:
    """The values a node sets beside each other: a literal's elements, a call's arguments, a conditional's
    branches, a comparison's sides, a match's cases."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return node.elts
    if isinstance(node, ast.Dict):
        return [k for k in node.keys if k is not None] + node.values
    if isinstance(node, ast.Call):
        return node.args
    if isinstance(node, ast.IfExp):
        return [node.body, node.orelse]
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.Match):
        return [case.pattern.value for case in node.cases if isinstance(case.pattern, ast.MatchValue)]
    return []


def names_outside_their_lists(path: Path, methods: set[str], stages: set[str]) -> list[str]:
    """Where code names methods or stages itself instead of asking their list: a method's name that is no other
    word of the project (no params section, setting's choice or stage) anywhere, or two methods or two stages side
    by side (a list, a mapping, a branch by hand). A stage's ``STEPS`` names the stages it runs: held to the list by
    test_the_list_of_stages_is_dvcs_and_each_names_its_module. Stage names that are also params sections or method
    kinds count only in a branch (a conditional or a match)."""
    tree = ast.parse(path.read_text())
    steps = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
             and [getattr(t, "id", None) for t in n.targets] == ["STEPS"]}
    distinct_methods = methods - SECTIONS - CHOICES - stages
    distinct_stages = stages - SECTIONS - KINDS
    where, out = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in distinct_methods:
            out.append(f"{where}:{node.lineno}: method {node.value!r}")
        if id(node) in steps:
            continue
        named = {c.value for c in _side_by_side(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        branch = isinstance(node, (ast.IfExp, ast.Match))
        for kind, names in (("methods", named & methods), ("stages", named & (stages if branch else distinct_stages))):
            if len(names) >= 2:
                out.append(f"{where}:{node.lineno}: {kind} {', '.join(sorted(names))}")
    return out


def _named_outside(methods: set[str] = set(REGISTRY), stages: set[str] = set(STAGES)) -> list[str]:
    files = [f for pkg in (*PACKAGES, "reports") for f in sorted((REPO / pkg).rglob("*.py"))
             if not str(f.relative_to(REPO)).startswith(LISTS)]
    return [hit for f in files for hit in names_outside_their_lists(f, methods, stages)]


def test_no_stage_or_method_is_named_outside_its_list():
    assert _named_outside() == []
    for sql in sorted((REPO / "reports" / "sql").glob("*.sql")):  # a named query's help lists no methods by hand
        for number, line in enumerate(sql.read_text().splitlines(), 1):
            words = set(re.findall(r"[a-z_0-9]+", line))
            assert len(words & set(REGISTRY)) < 2, f"{sql.name}:{number}: {sorted(words & set(REGISTRY))}"


def test_the_names_check_catches_a_hand_list(tmp_path):
    """What the lists replaced: a view-to-stage mapping, a branch on stage names, lists of methods."""
    code = tmp_path / "hand.py"
    code.write_text('VIEW_STAGE = {"queries": "probe", "results": "analyze"}\n'
                    'stage = "scores" if gradients else "baselines"\n'
                    'baselines = ["identity", "bm25"]\n'
                    'COLOURS = {"relatif": "#000000"}\n')
    found = [hit.split(": ", 1)[1] for hit in names_outside_their_lists(code, set(REGISTRY), set(STAGES))]
    assert found == ["stages analyze, probe", "stages baselines, scores", "methods bm25, identity", "method 'bm25'",
                     "method 'relatif'"], found


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
