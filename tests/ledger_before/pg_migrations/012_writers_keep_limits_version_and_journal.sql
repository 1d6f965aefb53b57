-- Writer schema 3 (see schema.writers_keep_limits_version_and_journal): every set_budget raises
-- limits_version and every reservation checks it, and every write transaction first replays the
-- journal. A build of schema 2 did neither, so it must refuse this ledger. Raised, never lowered.
INSERT INTO meta (key, value) VALUES ('writer_schema', '3')
ON CONFLICT (key) DO UPDATE SET value = CASE WHEN CAST(meta.value AS INTEGER) < 3 THEN excluded.value ELSE meta.value END;
