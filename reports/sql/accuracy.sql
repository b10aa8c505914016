-- Per task: the queries asked, and the share the model answered correctly (queries with no answer to check skipped).
SELECT task, count(*) AS n, avg(correct::INT) AS accuracy
FROM queries
GROUP BY task
ORDER BY task
