//! `ktrack status [SWEEP]`: runs by status; failed runs show their error.

use anyhow::Result;

use super::Env;
use crate::index::{self, runs};
use crate::output::{Format, Table};
use crate::runner::holder;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A sweep name (default: every run).
    pub sweep: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let rows = k.index.run(async {
        let mut c = k.index.pool().acquire().await.map_err(index::Error::from)?;
        let rows = runs::list(&mut c, args.sweep.as_deref()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let metrics = runs::metrics(&mut c, &r.id).await?;
            out.push((r, metrics));
        }
        Ok::<_, index::Error>(out)
    })?;
    if let Some(s) = &args.sweep
        && rows.is_empty()
    {
        anyhow::bail!("sweep `{s}` has no runs (run `ktrack run experiments/{s}.toml` first)");
    }
    if args.format == Format::Json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, m)| {
                let holder = (r.status == runs::Status::Running)
                    .then(|| holder::of_row(r.claimed_by.as_deref(), r.heartbeat_ms))
                    .flatten()
                    .map(|(l, age)| serde_json::json!({"worker": r.claimed_by, "state": l, "heartbeat_age_s": age.as_secs()}));
                serde_json::json!({
                    "id": r.id.hex(), "kind": r.kind, "label": r.label, "status": r.status.name(), "holder": holder,
                    "attempts": r.attempts, "error": r.error, "record": r.record.map(|h| h.hex()),
                    "started_at": r.started_at, "finished_at": r.finished_at,
                    "metrics": m.iter().map(|(s, n, v)| serde_json::json!({"eval": s, "metric": n, "value": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        return Ok(env.printer.data(&serde_json::to_string_pretty(&v)?)?);
    }
    let mut counts = std::collections::BTreeMap::new();
    for (r, _) in &rows {
        *counts.entry(r.status.name()).or_insert(0usize) += 1;
    }
    env.printer.status(
        "Status",
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut t = Table::new(["run", "kind", "what", "status", "test metric", "error"]);
    for (r, m) in &rows {
        let headline = m
            .iter()
            .find(|(s, n, _)| s == "test" && (n == "qwk" || n == "auroc"))
            .or_else(|| m.iter().find(|(s, n, _)| s == "train" && n == "loss"))
            .map(|(_, n, v)| format!("{n} {}", v.map_or("n/a".into(), |v| format!("{v:.3}"))))
            .unwrap_or_default();
        let status = match (r.status == runs::Status::Running)
            .then(|| holder::of_row(r.claimed_by.as_deref(), r.heartbeat_ms))
            .flatten()
        {
            Some((l, age)) => holder::status_text(l, age),
            None => r.status.name().to_string(),
        };
        t.row([
            r.id.short(),
            r.kind.clone(),
            r.label.clone(),
            status,
            headline,
            r.error.clone().unwrap_or_default(),
        ]);
    }
    env.printer.data(&super::data::render(&t, args.format))?;
    Ok(())
}
