"""Query suites: the reasoning tasks, the factual and control suites, and answer checking."""
