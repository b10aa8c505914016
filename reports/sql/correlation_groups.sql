-- The mean correlation of document scores between queries, per group of query pairs (within a task, among factual
-- queries, across reasoning tasks), for every segment: on all documents, on (category x source) cells, and split by
-- whether the two completions' largest-NLL tokens make the same choice.
-- param method = influence: a method of the run (influence/methods; `wherefrom sql --name methods` lists them)
SELECT segment, "group", n_pairs, mean_pearson, p_value, mean_pearson_cells, mean_pearson_same_choice,
       mean_pearson_other_choice
FROM correlation_groups
WHERE method = $method
ORDER BY segment, "group"
