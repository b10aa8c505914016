-- The corpus's documents per source, most first.
SELECT source, count(*) AS n
FROM corpus
GROUP BY source
ORDER BY n DESC, source
