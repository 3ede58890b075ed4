-- Runs and sweeps: identity, status and claims, lineage edges, outputs and metrics.
-- A run row is rebuildable from its record object (`ktrack reindex`).

CREATE TABLE runs (
    id           TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 64),
    kind         TEXT NOT NULL CHECK (kind IN ('pretrain', 'downstream')),
    spec         TEXT NOT NULL,            -- canonical JSON of the resolved inputs (hashes to id)
    label        TEXT NOT NULL,            -- human summary, e.g. "kl linear random 10% seed 0"
    status       TEXT NOT NULL CHECK (status IN ('planned', 'running', 'done', 'failed')),
    claimed_by   TEXT,
    heartbeat_ms INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    record       TEXT REFERENCES objects (hash),
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT
) WITHOUT ROWID;
CREATE INDEX runs_status ON runs (status);

-- Run → run dependencies (a downstream run on its pretraining run).
CREATE TABLE run_deps (
    run    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    needs  TEXT NOT NULL REFERENCES runs (id),
    PRIMARY KEY (run, needs)
) WITHOUT ROWID;

-- Lineage: what a run read, by role (cohort, split, fraction, weights, pretrain, external:NAME).
CREATE TABLE run_inputs (
    run   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role  TEXT NOT NULL,
    hash  TEXT NOT NULL,
    PRIMARY KEY (run, role)
) WITHOUT ROWID;

-- What a run wrote, by role (checkpoint, predictions:SET, curves, log, encoder, …).
CREATE TABLE run_outputs (
    run   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role  TEXT NOT NULL,
    hash  TEXT NOT NULL REFERENCES objects (hash),
    PRIMARY KEY (run, role)
) WITHOUT ROWID;

CREATE TABLE run_metrics (
    run      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    eval_set TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    REAL,
    PRIMARY KEY (run, eval_set, metric)
) WITHOUT ROWID;

-- Grid coordinates of downstream runs, for compare tables.
CREATE TABLE run_axes (
    run      TEXT PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    init     TEXT NOT NULL,
    task     TEXT NOT NULL,
    protocol TEXT NOT NULL,
    fraction REAL NOT NULL,
    seed     INTEGER NOT NULL,
    arch     TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sweeps (
    name       TEXT PRIMARY KEY NOT NULL,
    spec_path  TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sweep_runs (
    sweep TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    run   TEXT NOT NULL REFERENCES runs (id),
    PRIMARY KEY (sweep, run)
) WITHOUT ROWID;

-- Stat cache of imported files (like git's index): unchanged size, mtime and inode mean the
-- file still hashes to `hash`, so a re-import need not read or decode it again.
CREATE TABLE file_stats (
    path     TEXT PRIMARY KEY NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    hash     TEXT NOT NULL
) WITHOUT ROWID;
