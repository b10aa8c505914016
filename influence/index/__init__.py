"""The gradient index: every document's gradient stored once, projected per tracked layer (LoGra), so that a new
question is one backward pass and one matrix product.

``projection`` makes the per-layer projections; ``store`` holds the index's rows and manifest; ``build`` writes it
in shards on Dask; ``search`` finds the top documents on workers that hold the shards; ``asker`` answers questions.
"""
