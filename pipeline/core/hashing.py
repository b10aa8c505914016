"""A hash of the project's own code: work keyed by it is redone after the code that did it changed, not skipped."""

from __future__ import annotations

import hashlib
from pathlib import Path


def code_hash(paths: tuple[str, ...]) -> str:
    """A hash of the project's Python files under ``paths`` (relative to the checkout): a step redone after
    its code changed, not skipped."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for path in sorted(f for p in paths for f in ([root / p] if p.endswith(".py") else (root / p).rglob("*.py"))):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()
