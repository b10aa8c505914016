"""What a pipeline run asks of the engine: which methods it computes and where their scores lie (``methods``), and
its params as the engine's own settings (``settings``)."""
