#!/usr/bin/env bash
# The PostgreSQL pass of CI, run inside a throwaway cluster: `pg_virtualenv -t bash .ci/postgres.sh`
# (which sets PGHOST, PGPORT, PGUSER, PGPASSWORD and PGVERSION; the cluster is named `regress`).
# Every CLI test again with each home's index in a database of its own, the index unit tests,
# the tests that need a server (index migrate, a server restart mid-sweep), the real Slurm test
# against PostgreSQL when a local Slurm can start, and the skip benchmark beside SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

export KTRACK_TEST_DATABASE_URL="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/postgres"
cargo test --locked --lib index::
cargo test --locked --test cli
cargo test --locked --test cli index_migrate -- --ignored --nocapture
KTRACK_TEST_PG_RESTART="pg_ctlcluster $PGVERSION regress restart" \
  cargo test --locked --test cli a_database_restart -- --ignored --nocapture
if command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
  . .ci/slurm-local.sh
  if slurm_up; then
    trap slurm_down EXIT
    cargo test --locked --test cli slurm_real -- --ignored --nocapture
    slurm_down
    trap - EXIT
  else
    echo "warning: a local Slurm could not be started here; the real Slurm test on PostgreSQL was skipped" >&2
    slurm_down
  fi
else
  echo "note: no Slurm here; the real Slurm test on PostgreSQL was skipped" >&2
fi
cargo run --locked -q -- bench skip --runs 1000 --postgres "$KTRACK_TEST_DATABASE_URL"
