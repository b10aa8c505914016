-- The paper's findings: its numbers, ours (influence) and the baselines', and whether each reproduces.
SELECT finding, paper, round(influence, 3) AS ours, round(bm25, 3) AS bm25, round(random, 3) AS random,
       reproduces, test
FROM findings
