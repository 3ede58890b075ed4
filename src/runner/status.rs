//! What `ktrack status` shows of each run: its status (with its holder's liveness while it
//! runs), its headline metric and its error. The CLI only renders these rows.

use std::time::Duration;

use crate::context::Ktrack;
use crate::index::{self, runs};
use crate::runner::holder::{self, Liveness};

/// A running run's holder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Holder {
    pub heartbeat_age_s: u64,
    pub state: Liveness,
    pub worker: Option<String>,
}

/// One metric value of a run (`null` where undefined).
#[derive(Clone, Debug, serde::Serialize)]
pub struct MetricValue {
    pub eval: String,
    pub metric: String,
    pub value: Option<f64>,
}

/// One run as `status` lists it (fields in the order `--format json` prints them).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatusRow {
    pub attempts: i64,
    pub error: Option<String>,
    pub finished_at: Option<String>,
    pub holder: Option<Holder>,
    pub id: String,
    pub kind: String,
    pub label: String,
    pub metrics: Vec<MetricValue>,
    pub record: Option<String>,
    pub started_at: Option<String>,
    pub status: &'static str,
}

impl StatusRow {
    /// The status with what is known of a running run's holder.
    pub fn status_text(&self) -> String {
        match &self.holder {
            Some(h) => holder::status_text(h.state, Duration::from_secs(h.heartbeat_age_s)),
            None => self.status.to_string(),
        }
    }

    /// The headline metric, as `qwk 0.569`.
    pub fn headline(&self) -> String {
        headline(
            self.metrics
                .iter()
                .map(|m| (m.eval.as_str(), m.metric.as_str(), m.value)),
        )
        .map(|(n, v)| format!("{n} {}", v.map_or("n/a".into(), |v| format!("{v:.3}"))))
        .unwrap_or_default()
    }
}

/// A run's headline metric: the internal test set's QWK (KL) or AUROC (binary tasks), else a
/// pretraining run's training loss.
pub fn headline<'a>(
    metrics: impl Iterator<Item = (&'a str, &'a str, Option<f64>)> + Clone,
) -> Option<(&'a str, Option<f64>)> {
    let mut all = metrics.clone();
    all.find(|(s, n, _)| *s == "test" && (*n == "qwk" || *n == "auroc"))
        .or_else(|| {
            let mut again = metrics;
            again.find(|(s, n, _)| *s == "train" && *n == "loss")
        })
        .map(|(_, n, v)| (n, v))
}

/// How many runs have each status.
pub fn counts(rows: &[StatusRow]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in rows {
        *counts.entry(r.status).or_insert(0) += 1;
    }
    counts
}

/// Every run (of one sweep, or all), with its metrics.
pub fn rows(k: &Ktrack, sweep: Option<&str>) -> Result<Vec<StatusRow>, index::Error> {
    let (found, now) = {
        let mut c = k.index.read()?;
        let now = c.runs().clock_ms()?;
        let rows = c.runs().list(sweep)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let metrics = c.runs().metrics(&r.id)?;
            out.push((r, metrics));
        }
        (out, now)
    };
    Ok(found
        .into_iter()
        .map(|(r, m)| {
            let holder = (r.status == runs::Status::Running)
                .then(|| holder::of_row(r.claimed_by.as_deref(), r.heartbeat_ms, now))
                .flatten()
                .map(|(state, age)| Holder {
                    heartbeat_age_s: age.as_secs(),
                    state,
                    worker: r.claimed_by.clone(),
                });
            StatusRow {
                attempts: r.attempts,
                error: r.error,
                finished_at: r.finished_at,
                holder,
                id: r.id.hex(),
                kind: r.kind,
                label: r.label,
                metrics: m
                    .into_iter()
                    .map(|m| MetricValue {
                        eval: m.eval_set,
                        metric: m.metric,
                        value: m.value,
                    })
                    .collect(),
                record: r.record.map(|h| h.hex()),
                started_at: r.started_at,
                status: r.status.name(),
            }
        })
        .collect())
}
