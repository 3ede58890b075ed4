-- Foundation: objects, cohort versions and their samples, patient-level splits, label fractions.
-- Every row here can be rebuilt from record objects in the store (`ktrack reindex`).

CREATE TABLE objects (
    hash       TEXT PRIMARY KEY NOT NULL CHECK (length(hash) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE cohorts (
    hash        TEXT PRIMARY KEY NOT NULL REFERENCES objects (hash),
    name        TEXT NOT NULL,
    record      TEXT NOT NULL REFERENCES objects (hash),
    n_samples   INTEGER NOT NULL,
    n_patients  INTEGER NOT NULL,
    imported_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX cohorts_name ON cohorts (name);

CREATE TABLE samples (
    cohort         TEXT NOT NULL REFERENCES cohorts (hash) ON DELETE CASCADE,
    sample_id      TEXT NOT NULL,
    patient_id     TEXT NOT NULL,
    side           TEXT NOT NULL CHECK (side IN ('L', 'R')),
    visit          INTEGER NOT NULL,
    image          TEXT NOT NULL REFERENCES objects (hash),
    kl             INTEGER CHECK (kl BETWEEN 0 AND 4),
    incidence_4y   INTEGER CHECK (incidence_4y IN (0, 1)),
    progression_4y INTEGER CHECK (progression_4y IN (0, 1)),
    has_report     INTEGER NOT NULL CHECK (has_report IN (0, 1)),
    PRIMARY KEY (cohort, sample_id)
) WITHOUT ROWID;
CREATE INDEX samples_image ON samples (image);
CREATE INDEX samples_patient ON samples (cohort, patient_id);

CREATE TABLE splits (
    hash       TEXT PRIMARY KEY NOT NULL,
    cohort     TEXT NOT NULL REFERENCES cohorts (hash),
    assignment TEXT NOT NULL REFERENCES objects (hash),
    record     TEXT NOT NULL REFERENCES objects (hash),
    strategy   TEXT NOT NULL,
    train      REAL NOT NULL,
    val        REAL NOT NULL,
    test       REAL NOT NULL,
    stratify   TEXT,
    seed       INTEGER NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE split_members (
    split     TEXT NOT NULL REFERENCES splits (hash) ON DELETE CASCADE,
    sample_id TEXT NOT NULL,
    partition TEXT NOT NULL CHECK (partition IN ('train', 'val', 'test')),
    PRIMARY KEY (split, sample_id)
) WITHOUT ROWID;

CREATE TABLE fractions (
    hash       TEXT PRIMARY KEY NOT NULL,
    split      TEXT NOT NULL REFERENCES splits (hash),
    fraction   REAL NOT NULL CHECK (fraction > 0 AND fraction <= 1),
    stratify   TEXT NOT NULL,
    seed       INTEGER NOT NULL,
    members    TEXT NOT NULL REFERENCES objects (hash),
    record     TEXT NOT NULL REFERENCES objects (hash),
    n_samples  INTEGER NOT NULL,
    n_patients INTEGER NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE fraction_members (
    fraction  TEXT NOT NULL REFERENCES fractions (hash) ON DELETE CASCADE,
    sample_id TEXT NOT NULL,
    PRIMARY KEY (fraction, sample_id)
) WITHOUT ROWID;
