-- Facts about the index itself. `index_id` names this home's index; the same id is kept in the
-- file `index-id` beside the store, so a missing, emptied or foreign `ktrack.db` is recognised
-- instead of being taken for a new, empty home.
CREATE TABLE home_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
