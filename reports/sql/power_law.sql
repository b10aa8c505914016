-- Each query's power-law exponent of its top scores' tail (the paper's alpha), with its task and kind.
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT query_id, task, kind, alpha, alpha_se, tail_points
FROM query_stats
WHERE method = $method AND segment = $segment
ORDER BY task, query_id
