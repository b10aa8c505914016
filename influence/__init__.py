"""The attribution engine: EK-FAC curvature, preconditioned query gradients, document scoring, Dask shards."""
