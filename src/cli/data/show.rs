//! `ktrack data show`: counts and hashes of one cohort, split or fraction.

use anyhow::Result;

use super::render;
use super::split::partition_table;
use crate::cli::Env;
use crate::data::catalog::{self, Detail};
use crate::output::{Format, Table, pct, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any unique id prefix (at least 4 hex characters).
    pub id: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(env: &Env, args: Args) -> Result<()> {
    let k = env.open()?;
    let prefix = args.id.parse()?;
    let detail = catalog::show(&k, &prefix)?;
    if args.format == Format::Json {
        return Ok(env.printer.data(&serde_json::to_string_pretty(&detail)?)?);
    }
    env.printer.data(&render_detail(&detail, args.format))?;
    Ok(())
}

fn render_detail(detail: &Detail, format: Format) -> String {
    let mut out = String::new();
    match detail {
        Detail::Cohort(d) => {
            let c = &d.cohort;
            out.push_str(&format!(
                "cohort {:#}\nname       {}\nsamples    {}\npatients   {}\nrecord     {:#}\nimported   {}\n\n",
                c.hash,
                c.name,
                thousands(c.n_samples as u64),
                thousands(c.n_patients as u64),
                c.record,
                c.imported_at
            ));
            let mut t = Table::new(["visit (months)", "samples"]);
            for (v, n) in &d.visits {
                t.row([v.to_string(), thousands(*n as u64)]);
            }
            out.push_str(&render(&t, format));
            out.push('\n');
            for (label, counts) in &d.labels {
                let mut t = Table::new([label.name(), "samples"]);
                for (class, n) in counts {
                    t.row([class.clone(), thousands(*n as u64)]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
            if !d.rules.is_empty() {
                let mut t = Table::new(["rule", "value"]);
                for (k, v) in &d.rules {
                    t.row([k.clone(), v.clone()]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
        }
        Detail::Split(d) => {
            let s = &d.split;
            out.push_str(&format!(
                "split {:#}\ncohort     {} ({})\nstrategy   {}\nratios     train {} / val {} / test {}\nstratify   {}\nseed       {}\nassignment {:#}\n",
                s.hash,
                s.cohort,
                d.cohort_name,
                s.strategy,
                s.train,
                s.val,
                s.test,
                s.stratify.as_deref().unwrap_or("none"),
                s.seed,
                s.assignment
            ));
            for (label, parts) in &d.labels {
                out.push_str(&render(&partition_table(parts, Some(*label)), format));
                out.push('\n');
            }
            if !d.fractions.is_empty() {
                let mut t = Table::new(["fraction", "id", "label", "seed", "patients", "samples"]);
                for f in &d.fractions {
                    t.row([
                        pct(f.fraction),
                        f.hash.short(),
                        f.stratify.clone(),
                        f.seed.to_string(),
                        thousands(f.n_patients as u64),
                        thousands(f.n_samples as u64),
                    ]);
                }
                out.push_str(&render(&t, format));
                out.push('\n');
            }
        }
        Detail::Fraction(d) => {
            let f = &d.fraction;
            out.push_str(&format!(
                "fraction {:#}\nsplit      {}\ncohort     {}\nfraction   {}\nlabel      {}\nseed       {}\npatients   {}\nsamples    {}\nmembers    {:#}\n\n",
                f.hash,
                f.split,
                d.cohort,
                pct(f.fraction),
                f.stratify,
                f.seed,
                thousands(f.n_patients as u64),
                thousands(f.n_samples as u64),
                f.members
            ));
            let mut t = Table::new([f.stratify.as_str(), "samples"]);
            for (class, n) in &d.classes {
                t.row([class.clone(), thousands(*n as u64)]);
            }
            out.push_str(&render(&t, format));
            out.push('\n');
        }
    }
    out.trim_end().to_string() + "\n"
}
