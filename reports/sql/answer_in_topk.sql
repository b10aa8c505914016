-- Per task: share of queries with the answer in a top-k document (anywhere; to this question) and fact recall.
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param correct_only = true: only queries the model answered correctly (as in the paper)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT task, count(*) AS n_queries, any_value(top_k) AS top_k,
       round(avg(answer_in_topk::INT), 3) AS answer_in_topk,
       round(avg(step_answer_in_topk::INT), 3) AS step_answer_in_topk,
       round(avg(answer_in_context_topk::INT), 3) AS answer_to_question_in_topk,
       round(avg(fact_recall), 3) AS fact_recall
FROM query_stats
WHERE method = $method AND segment = $segment AND (correct OR NOT $correct_only::BOOLEAN)
GROUP BY task ORDER BY task
