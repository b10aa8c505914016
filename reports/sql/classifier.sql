-- The classifier's call on each query (procedural or document_specific), beside what its kind expects and what the
-- world's ground truth says.
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT query_id, task, expected, truth, predicted
FROM query_stats
WHERE method = $method AND segment = $segment
ORDER BY task, query_id
