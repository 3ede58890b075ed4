//! `ktrack bench ssl`: does self-supervised pretraining learn anything? A small study on fresh
//! synthetic cohorts in a temporary home — SimCLR and VICReg on the OAI-like training images
//! plus the NYU-like cohort, CLIP and SLIP (with CLIP, and with ConVIRT) on the hospital image–report pairs — then a linear probe for KL grade
//! on each encoder and on a random-init encoder (the reference), all through `ktrack run`'s
//! code path. Prints each probe's test QWK and its difference to the random-init probe's.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct SslBenchOptions {
    /// Patients of the labelled OAI-like cohort (the unlabelled and hospital cohorts get as many).
    pub patients: usize,
    pub image_size: u32,
    pub pretrain_epochs: usize,
    pub probe_epochs: usize,
    /// Label fractions of the probe.
    pub fractions: Vec<f64>,
    pub seed: u64,
    pub threads: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SslRow {
    pub init: String,
    pub fraction: f64,
    /// Internal test QWK of the linear probe for KL.
    pub test_qwk: f64,
    /// `test_qwk` minus the random-init probe's at the same fraction.
    pub gain_over_random: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SslReport {
    pub rows: Vec<SslRow>,
    pub seconds: f64,
}

pub fn run(
    o: &SslBenchOptions,
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<SslReport> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    write_study(root, o)?;
    let k = super::run_study(root, "ssl.toml", 1, interrupt)?;
    let points = k.index.read()?.points().values("test", "qwk")?;
    Ok(SslReport {
        rows: rows(&points),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The synthetic cohorts' descriptors and the sweep spec (`ssl.toml`) under `root`.
fn write_study(root: &std::path::Path, o: &SslBenchOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(root.join("datasets"))?;
    for (kind, labels) in [
        ("oai-like", "kl = \"kl\"\n"),
        ("nyu-like", ""),
        ("hospital", "report = \"impression\"\n"),
    ] {
        std::fs::write(
            root.join(format!("datasets/{kind}.toml")),
            format!(
                "name = \"{kind}\"\nmanifest = \"{kind}/manifest.csv\"\nimage_root = \"{kind}\"\n[columns]\n\
                 sample_id = \"sample_id\"\npatient_id = \"patient_id\"\nside = \"side\"\nvisit = \"visit_month\"\n\
                 image = \"image_path\"\n{labels}[synth]\nkind = \"{kind}\"\npatients = {}\nimage_size = {}\nseed = {}\n",
                o.patients, o.image_size, o.seed
            ),
        )?;
    }
    let fractions: Vec<String> = o.fractions.iter().map(f64::to_string).collect();
    std::fs::write(
        root.join("ssl.toml"),
        format!(
            r#"name = "bench-ssl"
[cohorts]
train = "datasets/oai-like.toml"
[split]
seed = {seed}
[fractions]
values = [{fractions}]
seed = {seed}
[pretrain.image-ssl]
method = "simclr"
data = ["train", "datasets/nyu-like.toml"]
epochs = {pe}
batch_size = 64
lr = 2e-3
temperature = 0.2
projection_dim = 64
seed = {seed}
[pretrain.vicreg-ssl]
method = "vicreg"
data = ["train", "datasets/nyu-like.toml"]
epochs = {pe}
batch_size = 64
lr = 5e-3
projection_dim = 128
seed = {seed}
[pretrain.image-text-ssl]
method = "clip"
data = ["datasets/hospital.toml"]
epochs = {pe}
batch_size = 50
lr = 2e-3
temperature = 0.1
projection_dim = 64
text = {{ max_len = 40, vocab_size = 500, dim = 64, layers = 1, heads = 4 }}
seed = {seed}
[pretrain.slip-ssl]
method = "slip"
data = ["datasets/hospital.toml"]
epochs = {pe}
batch_size = 50
lr = 2e-3
temperature = 0.1
projection_dim = 64
slip = {{ text_loss = "clip", simclr_weight = 1.0, text_weight = 1.0 }}
text = {{ max_len = 40, vocab_size = 500, dim = 64, layers = 1, heads = 4 }}
seed = {seed}
[pretrain.slip-convirt-ssl]
method = "slip"
data = ["datasets/hospital.toml"]
epochs = {pe}
batch_size = 50
lr = 2e-3
temperature = 0.1
projection_dim = 64
slip = {{ text_loss = "convirt", simclr_weight = 1.0, text_weight = 1.0 }}
text = {{ max_len = 40, vocab_size = 500, dim = 64, layers = 1, heads = 4 }}
seed = {seed}
[inits.random]
kind = "random"
[inits.image-ssl]
kind = "pretrain"
pretrain = "image-ssl"
[inits.vicreg-ssl]
kind = "pretrain"
pretrain = "vicreg-ssl"
[inits.image-text-ssl]
kind = "pretrain"
pretrain = "image-text-ssl"
[inits.slip-ssl]
kind = "pretrain"
pretrain = "slip-ssl"
[inits.slip-convirt-ssl]
kind = "pretrain"
pretrain = "slip-convirt-ssl"
[grid]
inits = ["random", "image-ssl", "vicreg-ssl", "image-text-ssl", "slip-ssl", "slip-convirt-ssl"]
tasks = ["kl"]
protocols = ["linear"]
seeds = [{seed}]
[train]
arch = "resnet-tiny"
image_size = {size}
[train.linear]
epochs = {le}
batch_size = 64
lr = 3e-3
[run]
threads = {threads}
"#,
            seed = o.seed,
            fractions = fractions.join(", "),
            pe = o.pretrain_epochs,
            le = o.probe_epochs,
            size = o.image_size,
            threads = o.threads,
        ),
    )?;
    Ok(())
}

/// Test QWK by fraction and init, with the gain over random init at the same fraction.
fn rows(points: &[crate::index::points::PointValue]) -> Vec<SslRow> {
    let random_at = |f: f64| {
        points
            .iter()
            .find(|p| p.init == "random" && p.fraction == f)
            .and_then(|p| p.value)
            .unwrap_or(f64::NAN)
    };
    let order = |i: &str| {
        [
            "random",
            "image-ssl",
            "vicreg-ssl",
            "image-text-ssl",
            "slip-ssl",
        ]
        .iter()
        .position(|x| *x == i)
    };
    let mut rows: Vec<SslRow> = points
        .iter()
        .map(|p| {
            let q = p.value.unwrap_or(f64::NAN);
            SslRow {
                init: p.init.clone(),
                fraction: p.fraction,
                test_qwk: q,
                gain_over_random: q - random_at(p.fraction),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        a.fraction
            .total_cmp(&b.fraction)
            .then(order(&a.init).cmp(&order(&b.init)))
    });
    rows
}
