-- Mean Pearson (and Spearman) r of document scores between the queries of two tasks (the paper's main evidence).
-- param method = influence: influence, bm25 or random
WITH pairs AS (
    SELECT task_a, task_b, pearson, spearman FROM correlations WHERE method = $method
    UNION ALL
    SELECT task_b, task_a, pearson, spearman FROM correlations WHERE method = $method AND task_a <> task_b)
SELECT task_a, task_b, count(*) AS n_pairs, round(avg(pearson), 3) AS mean_pearson,
       round(avg(spearman), 3) AS mean_spearman
FROM pairs GROUP BY task_a, task_b ORDER BY task_a, task_b
