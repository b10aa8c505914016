-- Top (or bottom) documents of one query, with their source, label and text.
-- param query_id: the query, e.g. arithmetic-000
-- param k = 10: how many documents
-- param end = top: top (most positive influence) or bottom (most negative)
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT t.rank, t.doc_id, round(t.score_per_nat, 4) AS score_per_nat, t.source, t.label, t.mentions_answer,
       replace(left(c.text, 160), chr(10), ' ') AS text
FROM top_docs t JOIN corpus c USING (doc_id)
WHERE t.query_id = $query_id AND t.method = $method AND t.segment = $segment AND t."end" = $end AND t.rank <= $k
ORDER BY t.rank
