-- Limits set with `set_budget`. They override the config; a NULL limit removes one.
CREATE TABLE budgets (
    scope      text NOT NULL,
    period     text NOT NULL,
    limit_nusd bigint,
    updated_at text,
    PRIMARY KEY (scope, period)
);
