"""Params: every bad value stops with one line naming the key, and nothing is written."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import load_params, parse_params
from pipeline.core.errors import WherefromError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_for_every_profile():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ["demo", *raw["profiles"]]:
        params = parse_params({**raw, "profile": profile})
        assert params.profile == profile
    assert parse_params({**raw, "profile": "test"}).corpus.n_entities < parse_params(raw).corpus.n_entities


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"corpus": {"n_entitys": 3}}, "unknown key 'corpus.n_entitys'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"corpus": {"n_entities": 0}}, "corpus.n_entities: Input should be greater than 0"),
        ({"queries": {"slope": -2}}, "queries.slope: Input should be greater than 0"),
        ({"pretrain": {"steps": "100"}}, "pretrain.steps: Input should be a valid integer (got '100')"),
        ({"corpus": {"filler_docs": 2.5}}, "corpus.filler_docs: Input should be a valid integer"),
        ({"pretrain": {"lr": "fast"}}, "pretrain.lr: Input should be a valid number"),
        ({"model": {"name_or_path": 7}}, "model.name_or_path: Input should be a valid string"),
        ({"profile": "laptop"}, "profile: unknown profile 'laptop' (known: demo"),
        (
            {"profile": "test", "profiles": {"test": {"model": {"n_layers": 0}}}},
            "model.n_layers: Input should be greater than 0",
        ),
        (
            {"profiles": {"laptop": {"pretrain": {"stepz": 9}}}},
            "params.yaml: profiles.laptop: unknown key 'pretrain.stepz'",
        ),
        (
            {"profiles": {"laptop": {"study": {"seeds": [1]}}}},
            "profiles.laptop: study.seeds is read by the dvc.yaml files from the top-level study section; set it there",
        ),
        (
            {"profiles": {"laptop": {"corpus": {"out_dir": "elsewhere"}}}},
            "profiles.laptop: corpus.out_dir is read by the dvc.yaml files from the top-level corpus section; set it "
            "there",
        ),
        ({"study": {"seeds": []}}, "study.seeds: Tuple should have at least 1 item"),
        ({"pretrain": {"seed": "1"}}, "pretrain.seed: Input should be a valid integer"),
        ({"analysis": {"source_map": {"Github": 3}}}, "analysis.source_map.Github: Input should be a valid string"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(WherefromError) as err:
        parse_params(raw, "params.yaml")
    assert str(err.value).startswith("params.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_training_seed_is_the_worlds_unless_set():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_params({**raw, "seed": 7}).training_seed == 7
    assert parse_params({**raw, "seed": 7, "pretrain": {**raw["pretrain"], "seed": 3}}).training_seed == 3


def test_version_and_a_bare_command(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("wherefrom ")
    proc = subprocess.run([sys.executable, "-m", "pipeline"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "positional arguments" in proc.stdout and "sql" in proc.stdout


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(WherefromError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("corpus: [unclosed\n")
    with pytest.raises(WherefromError, match=r"params.yaml: not valid YAML"):
        load_params(bad)


def test_cli_prints_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text("corpus:\n  n_entities: -1\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "corpus"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "wherefrom: error: params.yaml: corpus.n_entities: Input should be greater than 0 (got -1)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_stage_error_about_a_key_names_the_params_file_given(tmp_path):
    """A key found wrong inside a stage (here a model path) is reported against --params, not params.yaml."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["name_or_path"] = "./no/such/model"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "pretrain", "--params", "mine.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wherefrom: error: mine.yaml: model.name_or_path: no such directory: "
                                   "./no/such/model")


def test_a_missing_kronfluence_is_one_line_that_says_how_to_install_it(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    code = "import sys; sys.modules['kronfluence'] = None; from pipeline.cli import main; sys.exit(main(['factors']))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("wherefrom: error: kronfluence is not installed: pip install --no-deps "
                                          "kronfluence==1.0.1")


def _documented_messages(doc: str) -> dict[str, str]:
    """A bad-input table (README's few, docs/bad-input.md's all): what each bad input says."""
    text = (REPO / doc).read_text()
    if doc == "README.md":
        text = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    return {cells[0].lstrip("| "): cells[1].strip(" |`") for cells in rows if len(cells) == 2}


def test_the_readmes_bad_input_rows_are_the_full_lists_own():
    readme, full = _documented_messages("README.md"), _documented_messages("docs/bad-input.md")
    assert {row: full.get(row) for row in readme} == readme


@pytest.mark.parametrize("row, section, key, value", [
    ("unknown key", "corpus", "n_entitys", 3),
    ("wrong type", "pretrain", "steps", "100"),
    ("zero or negative count", "corpus", "n_entities", -1),
    ("a training seed named twice", "validation", "seeds", [1, 1]),
])
def test_the_documented_bad_params_examples_say_what_the_docs_show(tmp_path, row, section, key, value):
    """On the repository's own params.yaml, every profile present: the error names the key, not a profile."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(WherefromError) as err:
        load_params(tmp_path / "params.yaml")
    documented = _documented_messages("docs/bad-input.md")[row]
    assert str(err.value) == documented.replace("params.yaml", str(tmp_path / "params.yaml"))
