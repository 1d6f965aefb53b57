-- The version of what writers must maintain (see schema.record_writer_schema): 2 since
-- estimated_rollups. Raised, never lowered.
INSERT INTO meta (key, value) VALUES ('writer_schema', '2')
ON CONFLICT (key) DO UPDATE SET value = CASE WHEN CAST(meta.value AS INTEGER) < 2 THEN excluded.value ELSE meta.value END;
