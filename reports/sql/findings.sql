-- The paper's findings (segment all: the whole completion), then their decomposition by answer segment: the paper's
-- numbers and each method's, with its verdict (holds at p < 0.05, does not hold, or not testable and why).
SELECT finding, segment, method, paper, round(value, 3) AS value, verdict, round(p_value, 4) AS p_value,
       coalesce(reason, test) AS test_or_reason
FROM findings
