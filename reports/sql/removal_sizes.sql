-- What each leave-k-out arm removed (make validate): documents and tokens, per method and setting.
SELECT method, setting, any_value(docs_removed) AS documents, any_value(tokens_removed) AS tokens
FROM validation
WHERE test = 'leave_k_out'
GROUP BY ALL
ORDER BY setting, method
