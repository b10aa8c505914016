"""`wherefrom`: one sub-command per pipeline stage (what `dvc repro` runs), plus helpers.

    wherefrom params | corpus | pretrain | probe | factors | scores | baselines | analyze | report
                                               [--params params.yaml]
    wherefrom counterfactual | lds | tail_patch  # make validate: retrains, so outside dvc repro's default run
    wherefrom seed N | study                   # make seeds: one training run per seed, then every finding over them
    wherefrom ask "PROMPT" [--completion TEXT] # the top documents from the gradient index (wherefrom index builds it)
    wherefrom sql "SELECT ..."                 # ad-hoc, read-only SQL over the pipeline's views
    wherefrom sql --name NAME --param k=v      # a named query from reports/sql/NAME.sql (--list shows them)

Errors in input or params print one line, `wherefrom: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.core.config import Params, load_params
from pipeline.core.errors import ParamsError, WherefromError
from pipeline.core.stages import STAGES

KRONFLUENCE_MISSING = ("kronfluence is not installed: pip install --no-deps kronfluence==1.0.1 (without --no-deps "
                       "it swaps the CPU torch for a CUDA build; `make install` does this)")


def run_stage(name: str, params: Params, *args) -> None:
    from pipeline.stages import run_stage as run

    try:
        run(name, params, *args)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "kronfluence":
            raise WherefromError(KRONFLUENCE_MISSING) from None
        raise


DEFAULT_PARAMS = "params.yaml"


def _enter_project() -> None:
    """Run from the checkout's root when called from inside it (the params' paths are relative to it)."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_PARAMS).is_file() and (folder / "dvc.yaml").is_file():
            if folder != here:
                os.chdir(folder)
            return


def main(argv: list[str] | None = None) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("wherefrom")
    except PackageNotFoundError:  # run from a checkout that was never installed
        installed = "unknown"
    parser = argparse.ArgumentParser(prog="wherefrom", description="Training-data attribution pipeline: which "
                                     "pretraining documents taught a language model this answer. Each STAGE is one "
                                     "DVC stage (dvc repro runs them all); `wherefrom sql` queries the results.")
    parser.add_argument("--version", action="version", version=f"wherefrom {installed}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.about, description=stage.about)
        p.add_argument(
            "--params",
            default=DEFAULT_PARAMS,
            help="parameters file (default: params.yaml, found from anywhere in the checkout)",
        )
        if name == "seed":
            p.add_argument("seed", type=int, help="the training run's seed (pretrain.seed)")
    sql = sub.add_parser("sql", help="read-only SQL over the scores, queries, corpus and results (DuckDB views)",
                         description="Run SQL over views of the pipeline's Parquet files (see the README for the "
                                     "views and their columns). Only SELECT statements run.")
    sql.add_argument("query", nargs="?", help="a SELECT statement")
    sql.add_argument("--name", help="run the named query reports/sql/NAME.sql instead")
    sql.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a named query's parameter")
    sql.add_argument("--list", action="store_true", help="list the named queries and their parameters")
    sql.add_argument("--views", action="store_true", help="list the views there are now, and their columns")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--max-rows", type=int, default=40, help="rows shown in table format (default: 40)")
    sql.add_argument("--out", metavar="FILE", help="write the whole result to FILE.parquet or FILE.csv, streamed")
    sql.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        help="parameters file (default: params.yaml, found from anywhere in the checkout)",
    )
    from pipeline import ask

    ask.add_parser(sub)
    if not (sys.argv[1:] if argv is None else argv):  # a bare `wherefrom`: the whole help, not just the usage line
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    try:
        if args.params == DEFAULT_PARAMS:
            _enter_project()
        params = load_params(args.params)
        if args.command == "sql":
            from pipeline.sql import command

            try:
                return command.run(params, args)
            except BrokenPipeError:  # the reader (head, less) has gone: stop quietly, as Unix tools do
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
                return 0
        if args.command in STAGES and STAGES[args.command].torch:  # not ask: it checks its arguments first
            import transformers

            from pipeline.core.model import set_threads

            transformers.logging.disable_progress_bar()  # keep stage logs to our own progress bars
            set_threads(params.runtime.threads)
        if args.command == "ask":
            return ask.run(params, args)
        run_stage(args.command, params, *([args.seed] if args.command == "seed" else []))
    except ParamsError as err:
        print(f"wherefrom: error: {args.params}: {err}", file=sys.stderr)
        return 2
    except WherefromError as err:
        print(f"wherefrom: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
