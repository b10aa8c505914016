"""One module per DVC stage. Each has ``run(params)``; a stage imports libraries, never another stage."""
