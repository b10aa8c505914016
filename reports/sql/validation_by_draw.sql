-- make validate over training draws (validation.seeds): each method's mean per test and setting in each draw, then
-- over the draws: the mean of the draws' means and the lowest and highest of them. A method whose lowest draw is
-- above another's highest is ahead in every draw.
-- param test = tail_patch_adamw: the test (lds, leave_k_out, tail_patch_adamw, tail_patch_sgd)
WITH per_draw AS (
    SELECT setting, method, seed, avg(value) AS mean, count(value) AS queries
    FROM validation
    WHERE test = $test
    GROUP BY ALL
)
SELECT setting, method, count(*) AS draws, sum(queries) AS queries, round(avg(mean), 4) AS mean,
       round(min(mean), 4) AS lowest, round(max(mean), 4) AS highest
FROM per_draw
GROUP BY ALL
ORDER BY setting, mean DESC
