//! `ktrack bench …`: benchmarks that print ratios against a reference measured in the same run.

use std::path::PathBuf;

use anyhow::Result;

use super::Env;
use crate::bench::ingest::{self, IngestOptions};
use crate::output::{Format, bytes};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import throughput against plain blake3 hashing of the same files.
    Ingest {
        /// How many images to write.
        #[arg(long, default_value_t = 5000)]
        images: usize,
        /// Image side in pixels (16-bit grayscale PNG).
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Work directory (default: a temp directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

pub fn run(env: &Env, cmd: Command) -> Result<()> {
    match cmd {
        Command::Ingest {
            images,
            size,
            dir,
            seed,
            format,
        } => {
            let bar = env.printer.bar(images as u64, "Writing");
            let r = ingest::run(
                &IngestOptions {
                    images,
                    size,
                    dir,
                    seed,
                },
                &bar,
            )?;
            bar.finish_and_clear();
            if format == Format::Json {
                return Ok(env.printer.data(&serde_json::to_string_pretty(&r)?)?);
            }
            env.printer.data(&format!(
                "ingest benchmark: {} images of {}x{} 16-bit PNG, {} in all, {} threads\n\
                 plain blake3 hashing  {:>8.1} MB/s  ({:.3} s)\n\
                 ktrack data import    {:>8.1} MB/s  ({:.3} s; decode + hash + store + index)\n\
                   of which decoding   {:>8.1} MB/s  ({:.3} s alone)\n\
                 ratio import/hashing  {:>8.3}   (target >= 0.8)",
                r.images,
                r.size,
                r.size,
                bytes(r.bytes),
                r.threads,
                r.hash_mb_s,
                r.hash_seconds,
                r.ingest_mb_s,
                r.ingest_seconds,
                r.bytes as f64 / 1e6 / r.decode_seconds,
                r.decode_seconds,
                r.ratio
            ))?;
            Ok(())
        }
    }
}
