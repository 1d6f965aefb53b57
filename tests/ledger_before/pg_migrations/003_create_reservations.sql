-- Money held by calls in flight. Deleted on settle or release; reclaimed when expired or when
-- the process that made it is gone. Times are seconds since the epoch, by the server's clock.
CREATE TABLE reservations (
    id          text PRIMARY KEY,
    request_id  text,
    created_at  double precision,
    expires_at  double precision,
    host        text,
    pid         bigint,
    day         text NOT NULL,
    provider    text NOT NULL,
    tag         text NOT NULL,
    amount_nusd bigint NOT NULL
);
CREATE INDEX idx_reservations_day ON reservations (day);
CREATE INDEX idx_reservations_expires_at ON reservations (expires_at);
