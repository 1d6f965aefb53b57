-- A random id for this ledger (see schema.name_the_ledger): what the database says it is,
-- whatever URL reached it.
INSERT INTO meta (key, value) VALUES ('ledger_id', md5(random()::text || clock_timestamp()::text))
ON CONFLICT (key) DO NOTHING;
