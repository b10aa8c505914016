"""Scoring: every document's influence on every query row, and the estimators derived from the same pass.

``scorer`` preconditions the queries once and streams documents through; ``variants`` holds the quantities the
derived methods read; ``jobs`` and ``runner`` score a corpus in resumable shards on Dask (and the corpus and
index methods in process).
"""
