-- The index on PostgreSQL: the same tables, columns, keys and checks as the SQLite migrations
-- beside this folder, in one step. Text compares byte by byte (COLLATE "C"), as SQLite's does,
-- so every ORDER BY lists rows in the same order on both backends; integers are BIGINT (epoch
-- milliseconds overflow int4) and reals DOUBLE PRECISION. Every row can be rebuilt from record
-- objects in the store (`ktrack reindex`).

CREATE TABLE objects (
    hash       TEXT COLLATE "C" PRIMARY KEY NOT NULL CHECK (length(hash) = 64),
    size       BIGINT NOT NULL CHECK (size >= 0),
    kind       TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE cohorts (
    hash        TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES objects (hash),
    name        TEXT COLLATE "C" NOT NULL,
    record      TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    n_samples   BIGINT NOT NULL,
    n_patients  BIGINT NOT NULL,
    imported_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX cohorts_name ON cohorts (name);

CREATE TABLE samples (
    cohort         TEXT COLLATE "C" NOT NULL REFERENCES cohorts (hash) ON DELETE CASCADE,
    sample_id      TEXT COLLATE "C" NOT NULL,
    patient_id     TEXT COLLATE "C" NOT NULL,
    side           TEXT COLLATE "C" NOT NULL CHECK (side IN ('L', 'R')),
    visit          BIGINT NOT NULL,
    image          TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    kl             BIGINT CHECK (kl BETWEEN 0 AND 4),
    incidence_4y   BIGINT CHECK (incidence_4y IN (0, 1)),
    progression_4y BIGINT CHECK (progression_4y IN (0, 1)),
    has_report     BIGINT NOT NULL CHECK (has_report IN (0, 1)),
    PRIMARY KEY (cohort, sample_id)
);
CREATE INDEX samples_image ON samples (image);
CREATE INDEX samples_patient ON samples (cohort, patient_id);

CREATE TABLE splits (
    hash       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    cohort     TEXT COLLATE "C" NOT NULL REFERENCES cohorts (hash),
    assignment TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    record     TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    strategy   TEXT COLLATE "C" NOT NULL,
    train      DOUBLE PRECISION NOT NULL,
    val        DOUBLE PRECISION NOT NULL,
    test       DOUBLE PRECISION NOT NULL,
    stratify   TEXT COLLATE "C",
    seed       BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE split_members (
    split     TEXT COLLATE "C" NOT NULL REFERENCES splits (hash) ON DELETE CASCADE,
    sample_id TEXT COLLATE "C" NOT NULL,
    partition TEXT COLLATE "C" NOT NULL CHECK (partition IN ('train', 'val', 'test')),
    PRIMARY KEY (split, sample_id)
);

CREATE TABLE fractions (
    hash       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    split      TEXT COLLATE "C" NOT NULL REFERENCES splits (hash),
    fraction   DOUBLE PRECISION NOT NULL CHECK (fraction > 0 AND fraction <= 1),
    stratify   TEXT COLLATE "C" NOT NULL,
    seed       BIGINT NOT NULL,
    members    TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    record     TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    n_samples  BIGINT NOT NULL,
    n_patients BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE fraction_members (
    fraction  TEXT COLLATE "C" NOT NULL REFERENCES fractions (hash) ON DELETE CASCADE,
    sample_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (fraction, sample_id)
);

-- Runs and sweeps: identity, status and claims, lineage edges, outputs and metrics.
CREATE TABLE runs (
    id              TEXT COLLATE "C" PRIMARY KEY NOT NULL CHECK (length(id) = 64),
    kind            TEXT COLLATE "C" NOT NULL CHECK (kind IN ('pretrain', 'downstream')),
    spec            TEXT COLLATE "C" NOT NULL,
    label           TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN ('planned', 'running', 'done', 'failed')),
    claimed_by      TEXT COLLATE "C",
    heartbeat_ms    BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    error           TEXT COLLATE "C",
    record          TEXT COLLATE "C" REFERENCES objects (hash),
    created_at      TEXT COLLATE "C" NOT NULL,
    started_at      TEXT COLLATE "C",
    finished_at     TEXT COLLATE "C",
    leaked_patients BIGINT
);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_leaked ON runs (leaked_patients) WHERE leaked_patients IS NOT NULL;

CREATE TABLE run_deps (
    run   TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    needs TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    PRIMARY KEY (run, needs)
);

CREATE TABLE run_inputs (
    run  TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run, role)
);

CREATE TABLE run_outputs (
    run  TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL REFERENCES objects (hash),
    PRIMARY KEY (run, role)
);

CREATE TABLE run_metrics (
    run      TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    eval_set TEXT COLLATE "C" NOT NULL,
    metric   TEXT COLLATE "C" NOT NULL,
    value    DOUBLE PRECISION,
    PRIMARY KEY (run, eval_set, metric)
);

CREATE TABLE run_axes (
    run      TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    init     TEXT COLLATE "C" NOT NULL,
    task     TEXT COLLATE "C" NOT NULL,
    protocol TEXT COLLATE "C" NOT NULL,
    fraction DOUBLE PRECISION NOT NULL,
    seed     BIGINT NOT NULL,
    arch     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX run_axes_init ON run_axes (init);

CREATE TABLE sweeps (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    spec_path  TEXT COLLATE "C" NOT NULL,
    spec_hash  TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    record     TEXT COLLATE "C" REFERENCES objects (hash)
);

CREATE TABLE sweep_runs (
    sweep TEXT COLLATE "C" NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    run   TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    PRIMARY KEY (sweep, run)
);

-- Stat cache of imported files: unchanged size, mtime and inode mean the file still hashes
-- to `hash`.
CREATE TABLE file_stats (
    path     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    size     BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    inode    BIGINT NOT NULL,
    hash     TEXT COLLATE "C" NOT NULL
);

-- One row per (downstream run, evaluation set, metric) with the run's grid coordinates, in
-- the order comparison tables group by.
CREATE TABLE run_points (
    task     TEXT COLLATE "C" NOT NULL,
    protocol TEXT COLLATE "C" NOT NULL,
    fraction DOUBLE PRECISION NOT NULL,
    eval_set TEXT COLLATE "C" NOT NULL,
    metric   TEXT COLLATE "C" NOT NULL,
    init     TEXT COLLATE "C" NOT NULL,
    seed     BIGINT NOT NULL,
    run      TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    value    DOUBLE PRECISION,
    PRIMARY KEY (task, protocol, fraction, eval_set, metric, init, seed, run)
);
CREATE INDEX run_points_run ON run_points (run);

-- Audit: every reproduction of a run with its verdict.
CREATE TABLE reproductions (
    record     TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES objects (hash),
    run        TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    verdict    TEXT COLLATE "C" NOT NULL CHECK (verdict IN ('IDENTICAL', 'WITHIN TOLERANCE', 'DIFFERENT')),
    max_diff   DOUBLE PRECISION,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX reproductions_run ON reproductions (run);

-- Facts about the index itself: `index_id` names this home's index (also kept in the file
-- `index-id` beside the store).
CREATE TABLE home_meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
