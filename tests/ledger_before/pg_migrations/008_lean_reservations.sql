-- `reservations` holds only the calls in flight (a handful of rows), and every call inserts and
-- deletes one: secondary indexes there cost writes on the hot path and save nothing over a scan.
DROP INDEX IF EXISTS idx_reservations_day;
DROP INDEX IF EXISTS idx_reservations_expires_at;
DROP INDEX IF EXISTS idx_reservations_owner;
