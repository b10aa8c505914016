"""wherefrom's pipeline: the CLI, one module per DVC stage (``stages/``) and the libraries they use
(``world/``, ``analysis/``, ``sql/``, ``core/``)."""
