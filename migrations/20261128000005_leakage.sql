-- Patients of a downstream run's evaluated sets that were in its init's pretraining data, when
-- the init allowed it (`allow_leakage = true`); NULL otherwise. `ktrack compare` notes them.
ALTER TABLE runs ADD COLUMN leaked_patients INTEGER;
CREATE INDEX runs_leaked ON runs (leaked_patients) WHERE leaked_patients IS NOT NULL;
