-- Per method and task: the mean share of the top-k positive influence on each document category (the query's own
-- fact or procedure, another task's procedure, filler...).
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT method, task, category, avg(share) AS share
FROM procedure_share
WHERE segment = $segment
GROUP BY ALL
ORDER BY method, task, category
