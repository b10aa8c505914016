"""Each finding over the runs of a seed study: mean, sd and a 95% interval of its statistic, and in how many
runs it held.

The interval is the t interval of the mean over runs (n - 1 degrees of freedom): where the statistic
would settle over many training draws, not where one run falls. A run whose test was not testable
leaves the "k of n" count; a run whose statistic could not be computed leaves the mean.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from scipy import stats as sps

from pipeline.core import schemas
from pipeline.core.schemas import HOLDS, UNTESTABLE

KEYS = ("finding", "segment", "claim", "statistic", "paper", "paper_7b", "paper_35b", "method")


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, low, high) of ``values``; sd and the interval need two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(values.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def spread(by_seed: pa.Table) -> pa.Table:
    """One row per (finding, segment, method) of ``findings_by_seed``."""
    groups: dict[tuple, list[dict]] = {}
    for row in by_seed.to_pylist():
        groups.setdefault(tuple(row[k] for k in KEYS), []).append(row)
    out = []
    for key, rows in groups.items():
        values = np.asarray([r["value"] for r in rows if r["value"] is not None], dtype=np.float64)
        mean, sd, low, high = interval(values)
        testable = [r for r in rows if r["verdict"] != UNTESTABLE]
        out.append({**dict(zip(KEYS, key)), "n_runs": len(rows), "n_valued": len(values),
                    **{k: (v if math.isfinite(v) else None) for k, v in
                       dict(mean=mean, sd=sd, ci_low=low, ci_high=high).items()},
                    "n_testable": len(testable), "n_holds": sum(r["verdict"] == HOLDS for r in testable)})
    return pa.Table.from_pylist(out, schema=schemas.FINDING_SPREAD)
