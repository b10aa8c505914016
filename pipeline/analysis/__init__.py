"""The paper's statistics on a score matrix: magnitudes, tails, correlations, labels, the classifier, findings."""
