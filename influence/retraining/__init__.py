"""Retraining: the counterfactual checks of every method. ``retrains`` runs deterministic retrains (LDS subsets,
leave-k-out arms) as Dask tasks; ``tail_patch`` takes one more training step on a top document.
"""
