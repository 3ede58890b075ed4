//! LibTorch smoke test (feature `tch`): a few training steps on `tch-cpu`, and the same run
//! twice giving the same checkpoint, so the LibTorch path cannot rot. `.ci/run` runs it.
#![cfg(feature = "tch")]

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use ktrack::data::Label;
use ktrack::data::image::encode_png16;
use ktrack::data::synth::{self, Kind, SynthSpec};
use ktrack::id::Hash;
use ktrack::model::Arch;
use ktrack::progress::Quiet;
use ktrack::train::DeviceKind;
use ktrack::train::data::{Augment, Example, MemoryImages as Images, Normalize, Preprocess};
use ktrack::train::downstream::{self, DownstreamConfig, DownstreamData, Init, Protocol};

#[test]
fn libtorch_cpu_trains_and_repeats_bit_for_bit() {
    let sims = synth::simulate(&SynthSpec {
        kind: Kind::OaiLike,
        patients: 24,
        image_size: 32,
        seed: 1,
    });
    let mut images = BTreeMap::new();
    let mut examples = Vec::new();
    for s in sims.iter().filter(|s| s.visit == 0) {
        let png = encode_png16(32, 32, &s.render(32));
        let h = Hash::of(&png);
        images.insert(h, png);
        examples.push(Example {
            sample_id: s.sample_id.clone(),
            patient_id: s.patient_id.clone(),
            side: s.side,
            image: h,
            label: s.kl.unwrap_or(0),
        });
    }
    let val = examples.split_off(examples.len() * 3 / 4);
    let images = Images(images);
    let cfg = DownstreamConfig {
        arch: Arch::ResnetTiny,
        task: Label::Kl,
        protocol: Protocol::Finetune,
        preprocess: Preprocess {
            image_size: 32,
            normalize: Normalize::Zscore,
            flip_left: true,
        },
        augment: Augment::default(),
        epochs: 2,
        batch_size: 8,
        lr: 1e-3,
        weight_decay: 1e-4,
        warmup_epochs: 0.5,
        patience: None,
        seed: 3,
        device: DeviceKind::TchCpu,
        threads: 2,
    };
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let data = DownstreamData {
            train: examples.clone(),
            val: val.clone(),
            evals: vec![("val".into(), val.clone())],
            images: &images,
        };
        let report = downstream::run(
            &cfg,
            &Init::Random,
            &data,
            dir.path(),
            &Quiet,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(report.epochs_run, 2);
        assert!(report.curves.iter().all(|c| c.train_loss.is_finite()));
        hashes.push(Hash::of(&std::fs::read(&report.checkpoint).unwrap()));
    }
    assert_eq!(
        hashes[0], hashes[1],
        "the same run on LibTorch CPU gives the same checkpoint"
    );
}
