"""Exact attribution: the training run differentiated with respect to each document's weight (MAGIC)."""
