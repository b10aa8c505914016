-- Where a completion's NLL sits: per task, the mean share of each query's NLL on each answer segment (0 where it has none) and on its single largest token.
WITH totals AS (
    SELECT query_id, sum(nll) AS total, max(nll) AS largest FROM segments GROUP BY query_id),
cells AS (
    SELECT t.query_id, t.total, s.segment
    FROM totals t, (VALUES ('answer'), ('computed'), ('copied'), ('scaffold')) s(segment)),
shares AS (
    SELECT c.query_id, c.segment, coalesce(sum(g.nll), 0) / c.total AS share
    FROM cells c LEFT JOIN segments g USING (query_id, segment) GROUP BY c.query_id, c.segment, c.total
    UNION ALL
    SELECT query_id, '(largest token)', largest / total FROM totals)
SELECT q.task, s.segment, round(avg(s.share), 3) AS mean_nll_share, count(*) AS queries
FROM shares s JOIN queries q USING (query_id)
GROUP BY q.task, s.segment
ORDER BY q.task, s.segment
