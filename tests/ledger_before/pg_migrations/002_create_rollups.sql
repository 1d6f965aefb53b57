-- Per-day sums kept in step with `requests` in the same transaction: budget checks and reports
-- read these, so they stay fast at millions of rows. `requests` remains the truth.
CREATE TABLE rollups (
    day                 text NOT NULL,
    provider            text NOT NULL,
    model               text NOT NULL,
    tag                 text NOT NULL,
    task_type           text NOT NULL,
    requests            bigint,
    errors              bigint,
    input_tokens        bigint,
    output_tokens       bigint,
    cached_tokens       bigint,
    cost_nusd           bigint,
    reference_cost_nusd bigint,
    PRIMARY KEY (day, provider, model, tag, task_type)
);
CREATE INDEX idx_rollups_tag_day ON rollups (tag, day);
CREATE INDEX idx_rollups_provider_day ON rollups (provider, day);
