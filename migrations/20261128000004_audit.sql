-- Audit: the record object of each sweep, and every reproduction of a run with its verdict.

ALTER TABLE sweeps ADD COLUMN record TEXT REFERENCES objects (hash);

CREATE TABLE reproductions (
    record     TEXT PRIMARY KEY NOT NULL REFERENCES objects (hash),
    run        TEXT NOT NULL REFERENCES runs (id),
    verdict    TEXT NOT NULL CHECK (verdict IN ('IDENTICAL', 'WITHIN TOLERANCE', 'DIFFERENT')),
    max_diff   REAL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX reproductions_run ON reproductions (run);
