-- The attribution methods of this run (influence/methods registers them), each with how many of the paper's
-- findings (whole completion) hold under its scores, and how many could be tested.
SELECT method, count(*) FILTER (WHERE verdict = 'holds') AS holding, count(*) FILTER (WHERE verdict != 'not testable')
       AS testable, count(*) AS findings
FROM findings
WHERE segment = 'all'
GROUP BY method
ORDER BY method
