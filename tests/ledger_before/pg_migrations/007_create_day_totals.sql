-- Per-day sums by one dimension at a time (dim = day, provider, model, task_type or tag, key its
-- value), kept in step with `rollups` in the same transaction: a month's report or budget check
-- reads a few hundred of these instead of tens of thousands of rollups.
CREATE TABLE day_totals (
    dim                 text NOT NULL,
    key                 text NOT NULL,
    day                 text NOT NULL,
    requests            bigint,
    errors              bigint,
    input_tokens        bigint,
    output_tokens       bigint,
    cached_tokens       bigint,
    cost_nusd           bigint,
    reference_cost_nusd bigint,
    PRIMARY KEY (dim, key, day)
);
INSERT INTO day_totals (dim, key, day, requests, errors, input_tokens, output_tokens, cached_tokens, cost_nusd,
                        reference_cost_nusd)
SELECT 'day', day, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
       sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY day
UNION ALL
SELECT 'provider', provider, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens),
       sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY provider, day
UNION ALL
SELECT 'model', model, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
       sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY model, day
UNION ALL
SELECT 'task_type', task_type, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens),
       sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY task_type, day
UNION ALL
SELECT 'tag', tag, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
       sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY tag, day;
