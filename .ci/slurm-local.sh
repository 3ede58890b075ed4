# A real single-node Slurm on localhost for the Slurm executor test.
# Source it, then: slurm_up; …tests…; slurm_down
# Needs root and: apt-get install -y --no-install-recommends slurm-wlm munge
slurm_up() {
  SLURM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/slurm.XXXXXX"); local D=$SLURM_DIR i H
  chmod 755 "$D"; mkdir -p "$D"/{munge,state,spool,log}      # munged wants o+x on the socket dir
  mungekey --create --keyfile="$D/munge/munge.key"           # root-owned, mode 0600
  munged -F --key-file="$D/munge/munge.key" --socket="$D/munge/sock" \
    --pid-file="$D/munge/pid" --log-file="$D/log/munged.log" \
    --seed-file="$D/munge/seed" >"$D/log/munged.out" 2>&1 &
  SLURM_PIDS=$!
  for i in $(seq 50); do munge -n -S "$D/munge/sock" >/dev/null 2>&1 && break; sleep 0.1; done
  H=$(hostname -s)
  cat >"$D/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=${SLURM_CTLD_PORT:-6817}
SlurmdPort=${SLURM_D_PORT:-6818}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/sock
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
$(slurmd -C | head -1) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$D/slurm.conf"
  slurmctld -D >"$D/log/slurmctld.out" 2>&1 & SLURM_PIDS="$SLURM_PIDS $!"
  slurmd -D    >"$D/log/slurmd.out"    2>&1 & SLURM_PIDS="$SLURM_PIDS $!"
  for i in $(seq 300); do
    [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && return 0; sleep 0.1
  done
  echo "slurm not ready; logs in $D/log" >&2; tail -n 20 "$D"/log/*.log >&2; return 1
}
slurm_down() {
  local p i; scancel -u "$(id -un)" 2>/dev/null || true   # jobs outlive slurmd otherwise
  for i in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  for p in $SLURM_PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $SLURM_PIDS; do wait "$p" 2>/dev/null || true; done
  rm -rf "$SLURM_DIR"; unset SLURM_CONF SLURM_PIDS SLURM_DIR
}
