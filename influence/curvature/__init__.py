"""Curvature: the EK-FAC (or K-FAC) fit of the Gauss-Newton matrix over the tracked layers, in kronfluence's layout.

``factors`` fits and keeps the factors beside a manifest; ``fisher`` holds wherefrom's covariance and lambda
passes; ``jobs`` and ``runner`` run those passes on Dask shards; ``prepared`` loads fitted factors into a model
for preconditioning; ``tap`` reads per-item gradients in the eigenbasis.
"""
