-- The paper's findings (segment all: the whole completion), then their decomposition by answer segment: the paper's
-- numbers, ours (influence) and the baselines', and whether each reproduces.
SELECT finding, segment, paper, round(influence, 3) AS ours, round(bm25, 3) AS bm25, round(random, 3) AS random,
       reproduces, test
FROM findings
