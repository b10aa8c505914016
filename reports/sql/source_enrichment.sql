-- Share of each source among the top (or bottom) k documents over its share of the corpus, per task or kind.
-- param k = 100: top/bottom k (one of analysis.enrichment_ks, or the top_k)
-- param end = top: top or bottom
-- param level = kind: kind or task
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
-- param segment = all: all (the whole completion) or an answer segment: answer, computed, copied, scaffold
SELECT "group", source, round(share, 4) AS share, round(corpus_share, 4) AS corpus_share,
       round(enrichment, 2) AS enrichment
FROM enrichment
WHERE method = $method AND segment = $segment AND k = $k AND "end" = $end AND level = $level
ORDER BY "group", enrichment DESC
