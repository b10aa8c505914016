"""Stage `study` (``make seeds``): analyse every seed's run, then each finding over the runs.

    wherefrom study             # reads results/seeds/seed=N/; writes results/seed_study/ and metrics/seeds.json

Each seed's scores go through the analyze stage (its tables under ``results/seed_study/seed=N/``),
every time: the analysis is cheap beside the runs, and its code may have changed. Then
``findings_by_seed.parquet`` holds every finding, method and seed, and ``finding_spread.parquet`` each
finding's mean, sd, 95% interval and "holds in k of n runs" (``pipeline/analysis/spread.py``); both are
views in ``wherefrom sql``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from influence.methods import PAPER
from pipeline.analysis.spread import spread
from pipeline.core import schemas
from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.config import Params
from pipeline.core.errors import WherefromError
from pipeline.core.seeds import analysis_dir, for_seed, run_dir
from pipeline.core.steps import MARKERS, run_steps
from pipeline.stages import run_stage

STEPS = ("analyze",)  # run per seed, as its own command


def run(params: Params) -> Path:
    cfg = params.study
    out = Path(cfg.out_dir)
    per_seed = []
    for seed in cfg.seeds:
        finished = run_dir(params, seed) / MARKERS / "baselines"
        if not finished.is_file():
            raise WherefromError(f"{run_dir(params, seed)}: seed {seed}'s run is not finished; run make seeds")
        folder = analysis_dir(params, seed)
        run_steps(for_seed(params, seed), STEPS, folder, finished.read_text(), f"study: seed {seed}", run_stage,
                  resume=False)
        findings = pq.read_table(folder / "findings.parquet")
        per_seed.append(findings.add_column(0, "seed", pa.array([seed] * findings.num_rows, pa.int64())))
    by_seed = pa.concat_tables(per_seed).cast(schemas.FINDINGS_BY_SEED)
    write_parquet(by_seed, out / "findings_by_seed.parquet", schemas.FINDINGS_BY_SEED)
    table = spread(by_seed)
    write_parquet(table, out / "finding_spread.parquet", schemas.FINDING_SPREAD)
    paper = table.filter(pc.equal(table.column("segment"), schemas.WHOLE)).to_pylist()
    write_json({"runs": len(cfg.seeds), "seeds": list(cfg.seeds), "findings": {
        f"{r['method']}/{r['finding']}": {"mean": _round(r["mean"]), "sd": _round(r["sd"]), "holds": r["n_holds"],
                                          "testable": r["n_testable"]} for r in paper}}, cfg.metrics)
    runs = f"{len(cfg.seeds)} run{'' if len(cfg.seeds) == 1 else 's'}"
    print(f"study: {runs} (seeds {', '.join(map(str, cfg.seeds))}); each finding over them -> {out}/")
    for r in (r for r in paper if r["method"] == PAPER):
        print(f"  {r['finding']:<26} {_fmt(r['mean'])} ± {_fmt(r['sd'])}  holds in {r['n_holds']} of "
              f"{r['n_testable']} testable runs")
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
