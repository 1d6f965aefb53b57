-- Per-day sums of the calls whose usage was estimated (the provider reported none), by the same
-- keys as `rollups`: a report says how much of a period's spend is an estimate without reading
-- rows. Written only for such calls, so most days have no row here at all. Filled from the rows
-- already recorded.
CREATE TABLE estimated_rollups (
    day       text NOT NULL,
    provider  text NOT NULL,
    model     text NOT NULL,
    tag       text NOT NULL,
    task_type text NOT NULL,
    requests  bigint,
    cost_nusd bigint,
    PRIMARY KEY (day, provider, model, tag, task_type)
);
INSERT INTO estimated_rollups (day, provider, model, tag, task_type, requests, cost_nusd)
SELECT day, coalesce(provider, ''), coalesce(model, ''), tag, task_type, count(*), sum(cost_nusd)
FROM requests WHERE cost_estimated = 1
GROUP BY day, coalesce(provider, ''), coalesce(model, ''), tag, task_type;
