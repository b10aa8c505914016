-- How much of a query's positive influence its top p% of documents hold, averaged per task (the paper's sparsity).
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT q.task, m.percent, avg(m.top_sum) AS top_sum, avg(m.top_share) AS top_share
FROM top_mass m JOIN queries q USING (query_id)
WHERE m.method = $method AND m.segment = $segment
GROUP BY ALL
ORDER BY percent, task
