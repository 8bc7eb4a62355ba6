-- SQLite's own statements: its catalog. Same conventions as ../queries.sql; a name here
-- replaces the shared query of that name.

-- name: has_schema
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'

-- name: schema_objects
-- Every schema object, for the migration-equality test.
SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name
