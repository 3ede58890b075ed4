//! ktrack runs, tracks and reproduces a knee-osteoarthritis representation-learning study.
//!
//! A tour, in the order data flows (each layer uses only the ones below it):
//! - [`cli`]: the thin command line; parses arguments, calls one library function, renders
//!   its report. The library itself never prints.
//! - [`runner`]: sweep specs → resolved runs whose identity is the hash of their inputs
//!   ([`runner::resolved`]), the DAG, claims with heartbeats ([`runner::holder`]), executors
//!   (local, Slurm). [`report`] (comparison tables, plots, exports) and [`audit`] (lineage,
//!   reproduce, verify, gc, reindex, bundles) sit beside it.
//! - [`train`]: the loader, SSL pretraining and downstream probes / fine-tunes on burn, all
//!   driven by one resumable epoch loop ([`train::epochs`]); [`model`] holds the networks.
//! - [`data`]: descriptors and manifests validated and imported (images decoded once, hashed,
//!   stored) into cohort versions ([`data::manifest`] writes the canonical manifest whose hash
//!   is the version); splits and label fractions derive from them.
//! - [`metrics`]: every metric, scikit-learn's definitions; bootstrap CIs and DeLong.
//! - [`record`]: the typed records in the store that the index is rebuilt from.
//! - [`store`] (immutable blake3-addressed objects) and [`index`] (the SQLite catalogue and
//!   all of ktrack's SQL, behind a synchronous facade of sessions and `FromRow` structs;
//!   [`index::home`] opens it safely) with [`context`] (an open home: store + index + clock).
//! - Bottom: [`cohort`] (the vocabulary data and index share: sample, side, label,
//!   partition), [`env`](mod@env) (environment capture and the version), [`id`] (hashes and prefixes),
//!   [`rng`] (seeded ChaCha streams), [`table`] (Parquet in and out), [`output`] (printer,
//!   tables, progress), [`lossless`] (exact JSON floats), [`quote`] (input values quoted in
//!   errors, clipped), [`fault`] (full disks, busy indexes, odd file kinds), [`hint`] (the fix an
//!   error suggests).
//! - [`progress`]: the [`progress::Reporter`] and [`progress::Task`] the library reports to
//!   (the CLI draws them; the library never prints).
//! - [`bench`]: benchmarks that report ratios against a reference measured in the same run.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod cohort;
pub mod context;
pub mod data;
pub mod env;
pub mod fault;
pub mod hint;
pub mod id;
pub mod index;
pub mod lossless;
pub mod metrics;
pub mod model;
pub mod output;
pub mod predictions;
pub mod progress;
pub mod quote;
pub mod record;
pub mod report;
pub mod rng;
pub mod runner;
pub mod store;
pub mod table;
pub mod train;

/// The architecture's rules, checked against the sources.
#[cfg(test)]
mod architecture {
    use std::path::{Path, PathBuf};

    fn sources() -> Vec<(PathBuf, String)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((path, text));
                }
            }
        }
        let mut out = Vec::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    fn relative(p: &Path) -> String {
        p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string()
    }

    #[test]
    fn only_the_index_speaks_sql() {
        let offenders: Vec<String> = sources()
            .iter()
            .filter(|(p, text)| {
                !relative(p).starts_with("src/index/") && text.contains(concat!("sq", "lx"))
            })
            .map(|(p, _)| relative(p))
            .collect();
        assert!(offenders.is_empty(), "SQL outside src/index: {offenders:?}");
    }

    #[test]
    fn lower_layers_never_name_higher_ones() {
        let lower = [
            "src/index/",
            "src/store",
            "src/cohort.rs",
            "src/data/",
            "src/train/",
            "src/model/",
            "src/metrics/",
            "src/record.rs",
            "src/env.rs",
            "src/id.rs",
            "src/table.rs",
        ];
        let higher = [
            "crate::cli",
            "crate::runner",
            "crate::report",
            "crate::audit",
            "crate::bench",
        ];
        let mut offenders = Vec::new();
        for (p, text) in sources() {
            let name = relative(&p);
            if lower.iter().any(|l| name.starts_with(l)) {
                for h in higher.iter().filter(|h| text.contains(*h)) {
                    offenders.push(format!("{name} names {h}"));
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }

    #[test]
    fn no_function_is_longer_than_120_lines() {
        let mut long = Vec::new();
        for (p, text) in sources() {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(crate) fn ",
                    "pub(super) fn ",
                    "async fn ",
                ]
                .iter()
                .any(|k| trimmed.starts_with(k));
                if !is_fn {
                    continue;
                }
                // The body opens at the first line ending in `{` (a `;` first: no body).
                let Some(open) = (i..lines.len()).find(|&j| {
                    let l = lines[j].trim_end();
                    l.ends_with('{') || l.ends_with(';')
                }) else {
                    continue;
                };
                if lines[open].trim_end().ends_with(';') {
                    continue;
                }
                let close = (open + 1..lines.len()).find(|&j| {
                    let l = lines[j];
                    l.len() > indent
                        && l[..indent].trim().is_empty()
                        && l[indent..].starts_with('}')
                });
                if let Some(close) = close
                    && close - i + 1 > 120
                {
                    long.push(format!(
                        "{}:{} ({} lines)",
                        relative(&p),
                        i + 1,
                        close - i + 1
                    ));
                }
            }
        }
        assert!(long.is_empty(), "functions over 120 lines: {long:#?}");
    }
}
