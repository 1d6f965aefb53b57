-- One row per `complete` call, whatever its outcome. Money in integer nano-dollars.
CREATE TABLE requests (
    id                  text PRIMARY KEY,
    ts                  text NOT NULL,      -- UTC, ISO 8601 with milliseconds
    day                 text NOT NULL,      -- the local day (budget time zone) the call belongs to
    tag                 text DEFAULT '',
    task_type           text DEFAULT '',
    provider            text,
    model               text,
    status              text NOT NULL,      -- ok | error | cancelled | refused
    input_tokens        bigint,
    output_tokens       bigint,
    cached_tokens       bigint,
    cache_write_tokens  bigint,
    cost_nusd           bigint DEFAULT 0,
    cost_usd            text,               -- the same figure as an exact decimal
    cost_estimated      bigint DEFAULT 0,   -- 1 when the provider reported no usage and we estimated
    prices              text,               -- JSON: the prices in force for this call, and their source
    reference_cost_nusd bigint,
    latency_ms          bigint,
    attempts            text,               -- JSON list: every model tried, with its outcome
    error_code          text,
    error               text,
    prompt_hash         text,
    prompt              text,               -- only when store_prompts = true
    strategy            text
);
CREATE INDEX idx_requests_ts ON requests (ts);
CREATE INDEX idx_requests_day ON requests (day);
