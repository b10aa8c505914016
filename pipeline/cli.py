"""`wherefrom`: one sub-command per pipeline stage (what `dvc repro` runs), plus helpers.

    wherefrom params | corpus | pretrain | probe | factors | scores  [--params params.yaml]

Errors in input or params print one line, `wherefrom: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import transformers

from pipeline.config import load_params
from pipeline.errors import WherefromError
from pipeline.model import set_threads

STAGES = {
    "params": "resolve the selected profile into each stage's settings -> data/params/",
    "corpus": "generate the world's documents with ground truth -> data/corpus/",
    "pretrain": "train a tokenizer and a small causal LM on the corpus (or adopt model.name_or_path) -> models/lm/",
    "probe": "ask the query suites, record completions, NLL and correctness -> data/queries.parquet",
    "factors": "fit the EK-FAC curvature of the model on the corpus -> results/factors/",
    "scores": "influence of every document on every query, sharded on Dask -> results/scores/",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wherefrom", description="Training-data attribution pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, help_text in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        transformers.logging.disable_progress_bar()  # keep stage logs to our own progress bars
        params = load_params(args.params)
        set_threads(params.runtime.threads)
        importlib.import_module(f"pipeline.{args.command}").run(params)
    except WherefromError as err:
        print(f"wherefrom: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
