//! Who holds a claim, and whether that process still lives.
//!
//! A worker id is `host:pid:started_ms:pidns` (the pid namespace's inode, so that two
//! containers with the same host name never judge each other's processes). A holder on this
//! host, in this pid namespace, whose pid no longer exists is dead for certain: its runs are
//! reclaimed at once instead of after the stale limit. Anywhere else only the heartbeat tells,
//! and a holder silent for longer than a few heartbeats is reported as such.

use std::time::Duration;

/// How often a worker refreshes the heartbeat of its claims.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The least `--stale-after` accepted: below a few heartbeats, a live holder that is merely
/// slow to write (a busy index, a paused VM) would have its run taken while it still trains.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT_EVERY.as_secs());

/// What this process knows of a claim's holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Heartbeat fresh (or the process is seen alive on this host).
    Alive,
    /// On this host and its process is gone: the claim can be taken now.
    Dead,
    /// Another host, no heartbeat for longer than a few heartbeats: probably dead; the claim
    /// is taken once the stale limit passes.
    Silent,
}

/// A name for this process in claims.
pub fn worker_id() -> String {
    format!(
        "{}:{}:{}:{}",
        crate::env::hostname(),
        std::process::id(),
        crate::context::wall_ms(),
        pid_namespace().unwrap_or_default()
    )
}

fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Judges a holder from its worker id and the age of its heartbeat.
pub fn liveness(worker: &str, heartbeat_age: Duration) -> Liveness {
    if is_dead_here(worker) {
        return Liveness::Dead;
    }
    if heartbeat_age > 3 * HEARTBEAT_EVERY {
        Liveness::Silent
    } else {
        Liveness::Alive
    }
}

/// The holder of a running run as `status` shows it: how alive it looks and how old its
/// heartbeat is at `now` (ms, by the index's clock).
pub fn of_row(
    claimed_by: Option<&str>,
    heartbeat_ms: Option<i64>,
    now: i64,
) -> Option<(Liveness, Duration)> {
    let by = claimed_by?;
    let age = Duration::from_millis((now - heartbeat_ms.unwrap_or(0)).max(0) as u64);
    Some((liveness(by, age), age))
}

/// A running run's status with what is known of its holder.
pub fn status_text(liveness: Liveness, age: Duration) -> String {
    match liveness {
        Liveness::Alive => "running".into(),
        Liveness::Dead => "running, holder dead (reclaimed by the next run)".into(),
        Liveness::Silent => format!("running, no heartbeat for {}s", age.as_secs()),
    }
}

/// True only when `worker` ran on this host, in this pid namespace, and its pid is gone.
pub fn is_dead_here(worker: &str) -> bool {
    let mut parts = worker.rsplitn(4, ':');
    let (Some(ns), Some(_started), Some(pid), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(ns), Ok(pid)) = (ns.parse::<u64>(), pid.parse::<i32>()) else {
        return false;
    };
    if host != crate::env::hostname() || Some(ns) != pid_namespace() || pid <= 0 {
        return false;
    }
    if pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_process_here_is_dead_and_this_one_is_not() {
        let me = worker_id();
        assert!(!is_dead_here(&me));
        assert_eq!(liveness(&me, Duration::ZERO), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let parts: Vec<&str> = me.rsplitn(4, ':').collect();
        let gone = format!("{}:{pid}:{}:{}", parts[3], parts[1], parts[0]);
        assert!(is_dead_here(&gone), "{gone}");
        assert_eq!(liveness(&gone, Duration::ZERO), Liveness::Dead);
    }

    #[test]
    fn elsewhere_only_the_heartbeat_tells() {
        let other = "another-host:4242:1700000000000:4026531836";
        assert!(!is_dead_here(other));
        assert_eq!(liveness(other, Duration::from_secs(1)), Liveness::Alive);
        assert_eq!(liveness(other, Duration::from_secs(60)), Liveness::Silent);
        // Ids of the older format (no namespace) are judged by the heartbeat alone.
        assert!(!is_dead_here("host:1:2"));
    }
}
