"""wherefrom's pipeline: one module per DVC stage, the CLI and the generated world."""
