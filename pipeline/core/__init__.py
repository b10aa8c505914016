"""Foundations every part imports: typed config, the one error type, atomic writes, Parquet schemas, LM helpers."""
