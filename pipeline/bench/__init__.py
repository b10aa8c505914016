"""Benchmarks (not tests), one module each: documents/s of plain forward+backward, kronfluence, wherefrom's scorer
and its `scores` stage (``scoring``), scale-out on Dask (``scale_out``), a factors worker's memory at the GPU shape
(``factor_memory``), the gradient index on a finished run (``index``), and exact attribution's cost (``magic``).

    python -m pipeline.bench [--docs 512] [--queries 16]      (or: make bench)
    python -m pipeline.bench.index                            (after make demo; make bench runs it too)
    python -m pipeline.bench.magic                            (make bench runs it too)

It also fits EK-FAC twice, with kronfluence's passes and with wherefrom's, and times each step.

Everything runs in one process on the same model, the same world documents and the same queries, so
the ratios are comparable. The model is the demo architecture at random init (speed does not depend
on the weights) and documents are cut to their first 128 tokens (``long_docs: truncate``, so every
line reads the same sequences) and ordered by length, as the `scores` stage batches them, so that every
line pads the same batches; --layers, --hidden, ... --context give
another size, with world documents packed to fill the context. Plain forward+backward is the floor
any gradient-based scorer pays per document. Each line runs in float32 and in bfloat16 autocast, and
reports its peak memory: CUDA's peak allocation on a GPU, the peak growth of the process's resident
memory on the CPU (a lower bound: memory the allocator kept from an earlier line is not counted
again). The stage line is the `scores` stage's steady rate on a Dask worker, reading the corpus
Parquet and writing the score shards; the time until its workers are ready (start, imports, model,
factors, queries) is printed apart, since a run pays it once. Scale-out compares that rate on one
worker and on two, one core (or GPU) each, against what two processes reach here without Dask.
The `factors` stage's two passes on Dask are timed the same way (one worker, two, and the cost of one
more shard), and a factors worker's peak memory is measured at the GPU shape on a few documents.
"""
