//! The Slurm executor: one `sbatch` job array for the pretraining runs and one for the
//! downstream runs (started after the first, `afterany`), whose tasks call `ktrack exec RUN` on
//! a shared store. Runs whose pretraining failed exit with a clear error; the rest still run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::id::Hash;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not write `{path}`: {message}")]
    Write { path: PathBuf, message: String },
    #[error("`sbatch` failed: {0}")]
    Sbatch(String),
}

/// sbatch options.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus: Option<u32>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    /// The ktrack binary the tasks run (default: this one).
    pub binary: PathBuf,
    /// The shared ktrack home (absolute).
    pub home: PathBuf,
}

/// One job array.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Script {
    pub name: String,
    pub path: PathBuf,
    pub runs_file: PathBuf,
    pub runs: Vec<Hash>,
    pub text: String,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the scripts (and run lists) into `dir`: pretraining first, then downstream.
pub fn write_scripts(
    dir: &Path,
    sweep: &str,
    pretrain: &[Hash],
    downstream: &[Hash],
    opts: &SlurmOptions,
) -> Result<Vec<Script>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut scripts = Vec::new();
    for (part, runs) in [("pretrain", pretrain), ("downstream", downstream)] {
        if runs.is_empty() {
            continue;
        }
        let name = format!("ktrack-{sweep}-{part}");
        let runs_file = dir.join(format!("{part}.runs"));
        let path = dir.join(format!("{part}.sbatch"));
        let mut text = String::from("#!/bin/bash\n");
        text.push_str(&format!("#SBATCH --job-name={name}\n"));
        text.push_str(&format!("#SBATCH --array=0-{}\n", runs.len() - 1));
        text.push_str(&format!(
            "#SBATCH --output={}/%x-%A_%a.out\n",
            dir.display()
        ));
        if let Some(p) = &opts.partition {
            text.push_str(&format!("#SBATCH --partition={p}\n"));
        }
        if let Some(g) = opts.gpus {
            text.push_str(&format!("#SBATCH --gpus={g}\n"));
        }
        if let Some(t) = &opts.time {
            text.push_str(&format!("#SBATCH --time={t}\n"));
        }
        if let Some(a) = &opts.account {
            text.push_str(&format!("#SBATCH --account={a}\n"));
        }
        if let Some(c) = opts.cpus_per_task {
            text.push_str(&format!("#SBATCH --cpus-per-task={c}\n"));
        }
        if let Some(m) = &opts.mem {
            text.push_str(&format!("#SBATCH --mem={m}\n"));
        }
        text.push_str("set -euo pipefail\n");
        text.push_str(&format!(
            "RUN=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})\n",
            quote(&runs_file.display().to_string())
        ));
        text.push_str(&format!(
            "exec {} --home {} --no-progress exec \"$RUN\"\n",
            quote(&opts.binary.display().to_string()),
            quote(&opts.home.display().to_string())
        ));
        let list: String = runs.iter().map(|r| format!("{}\n", r.hex())).collect();
        for (p, body) in [(&runs_file, &list), (&path, &text)] {
            std::fs::write(p, body).map_err(|e| Error::Write {
                path: p.clone(),
                message: e.to_string(),
            })?;
        }
        scripts.push(Script {
            name,
            path,
            runs_file,
            runs: runs.to_vec(),
            text,
        });
    }
    Ok(scripts)
}

/// Submits the scripts in order, each after the previous one; returns the job ids.
pub fn submit(scripts: &[Script]) -> Result<Vec<String>, Error> {
    let mut ids: Vec<String> = Vec::new();
    for s in scripts {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(prev) = ids.last() {
            cmd.arg(format!("--dependency=afterany:{prev}"));
        }
        cmd.arg(&s.path);
        let out = cmd
            .output()
            .map_err(|e| Error::Sbatch(format!("cannot start sbatch: {e}")))?;
        if !out.status.success() {
            return Err(Error::Sbatch(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_list_runs_and_call_exec() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            gpus: Some(1),
            time: Some("04:00:00".into()),
            account: Some("oa-lab".into()),
            binary: "/opt/ktrack".into(),
            home: "/shared/ktrack".into(),
            ..SlurmOptions::default()
        };
        let runs = [Hash::of(b"a"), Hash::of(b"b")];
        let s = write_scripts(dir.path(), "study", &[], &runs, &opts).unwrap();
        assert_eq!(s.len(), 1);
        let text = &s[0].text;
        assert!(text.contains("#SBATCH --array=0-1"));
        assert!(text.contains("#SBATCH --partition=gpu") && text.contains("#SBATCH --gpus=1"));
        assert!(
            text.contains("#SBATCH --account=oa-lab") && text.contains("#SBATCH --time=04:00:00")
        );
        assert!(
            text.contains("exec '/opt/ktrack' --home '/shared/ktrack' --no-progress exec \"$RUN\"")
        );
        let list = std::fs::read_to_string(&s[0].runs_file).unwrap();
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            vec![runs[0].hex(), runs[1].hex()]
        );
    }
}
