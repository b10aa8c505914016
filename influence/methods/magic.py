"""MAGIC (Ilyas & Engstrom 2025): each document's exact first-order effect on the completion, by reverse mode through
the whole training run (``influence/exact``). The yardstick the approximate methods are held to."""

from influence.methods.base import Method

METHOD = Method("magic", "exact dF/dw of the completion through the whole training run (metagradients)",
                from_training=lambda replay, items: replay.metagradients(items), colour="#000000")
