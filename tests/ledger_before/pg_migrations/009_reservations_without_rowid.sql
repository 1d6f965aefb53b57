-- The SQLite ledger made `reservations` a WITHOUT ROWID table here (one B-tree instead of a table
-- and its key index: half the pages written per hold). PostgreSQL tables have no rowid, and the
-- primary key is already the only index: nothing to change; the number keeps both in step.
SELECT 1;
