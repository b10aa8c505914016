-- Mean Pearson (and Spearman) r of document scores between the queries of two tasks (the paper's main evidence),
-- and of their summed scores per (document category x source) cell, a coarse procedure-level r.
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
WITH pairs AS (
    SELECT task_a, task_b, pearson, spearman, pearson_cells FROM correlations WHERE method = $method AND segment = $segment
    UNION ALL
    SELECT task_b, task_a, pearson, spearman, pearson_cells FROM correlations WHERE method = $method AND segment = $segment AND task_a <> task_b)
SELECT task_a, task_b, count(*) AS n_pairs, round(avg(pearson), 3) AS mean_pearson,
       round(avg(spearman), 3) AS mean_spearman, round(avg(pearson_cells), 3) AS mean_pearson_cells
FROM pairs GROUP BY task_a, task_b ORDER BY task_a, task_b
