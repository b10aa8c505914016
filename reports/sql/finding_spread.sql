-- The seed study (make seeds): each finding over the training runs, mean ± sd, the 95% interval of the mean and
-- in how many testable runs it held.
-- param method = influence: the attribution method
SELECT finding, paper, n_runs, round(mean, 3) AS mean, round(sd, 3) AS sd, round(ci_low, 3) AS ci_low,
       round(ci_high, 3) AS ci_high, n_holds || ' of ' || n_testable AS holds_in
FROM finding_spread
WHERE segment = 'all' AND method = $method
