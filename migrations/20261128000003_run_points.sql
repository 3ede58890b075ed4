-- One row per (downstream run, evaluation set, metric) with the run's grid coordinates, keyed
-- in the order comparison tables group by, so `ktrack compare` reads it in one ordered scan
-- without joins. Filled when a run finishes (and rebuilt by `ktrack reindex`).

CREATE TABLE run_points (
    task     TEXT NOT NULL,
    protocol TEXT NOT NULL,
    fraction REAL NOT NULL,
    eval_set TEXT NOT NULL,
    metric   TEXT NOT NULL,
    init     TEXT NOT NULL,
    seed     INTEGER NOT NULL,
    run      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    value    REAL,
    PRIMARY KEY (task, protocol, fraction, eval_set, metric, init, seed, run)
) WITHOUT ROWID;
CREATE INDEX run_points_run ON run_points (run);
CREATE INDEX run_axes_init ON run_axes (init);

INSERT INTO run_points (task, protocol, fraction, eval_set, metric, init, seed, run, value)
SELECT a.task, a.protocol, a.fraction, m.eval_set, m.metric, a.init, a.seed, a.run, m.value
FROM run_axes a JOIN run_metrics m ON m.run = a.run;
