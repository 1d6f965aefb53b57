-- Reservations become leases: `owner` (the open ledger that renews them) and `hard_expires_at`
-- (the call's own time-to-live, past which no renewal extends them).
ALTER TABLE reservations ADD COLUMN owner text;
ALTER TABLE reservations ADD COLUMN hard_expires_at double precision;
CREATE INDEX idx_reservations_owner ON reservations (owner);
