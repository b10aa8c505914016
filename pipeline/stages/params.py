"""Stage `params`: resolve the profile and write each stage's effective settings to its own JSON file.

    wherefrom params            # writes data/params/{corpus,pretrain,probe}.json

It runs on every `dvc repro` (it is cheap); a file whose content did not change leaves its stage cached.
"""

from __future__ import annotations

from pipeline.core.atomic import write_json
from pipeline.core.config import Params
from pipeline.core.stages import RESOLVED_DIR, resolved, with_settings


def run(params: Params) -> None:
    for stage in with_settings():
        write_json(resolved(params, stage), RESOLVED_DIR / f"{stage}.json")
    print(f"params: profile {params.profile!r} resolved for {', '.join(with_settings())} -> {RESOLVED_DIR}/")
