//! Radiology impressions written from a knee's findings, with the variety of real reports:
//! synonyms, negations ("No acute fracture."), varying order, and never a KL grade.
//!
//! Like clinical reports of knees referred for osteoarthritis, they grade the degenerative
//! findings coarsely (none, mild, moderate to severe; the predominant compartment only) and
//! spend their detail on what guides care: the signs of fast progression, alignment,
//! effusion and hardware. In a corpus of KL 3 knees the grade's findings therefore read
//! almost alike, and what varies between impressions is prognostic.

use crate::rng::{self, Rng};

/// What a radiologist would see on the image.
#[derive(Clone, Debug)]
pub struct Findings {
    /// Joint-space narrowing as a fraction of normal width.
    pub medial_narrowing: f64,
    pub lateral_narrowing: f64,
    /// Osteophyte size relative to the bone scale.
    pub osteophytes: f64,
    pub sclerosis: f64,
    pub effusion: bool,
    pub alignment_deg: f64,
    pub hardware: bool,
    /// The signs of a fast progressor (0..=1.6): medial tibial spine spurring and subchondral
    /// change, visible before the grade changes.
    pub progression_signs: f64,
}

fn pick<'a>(r: &mut Rng, options: &[&'a str]) -> &'a str {
    options[rng::below(r, options.len() as u64) as usize]
}

/// The words for a coarse level: 0 none, 1 mild, 2 moderate to severe.
fn degree(r: &mut Rng, level: usize) -> &'static str {
    match level {
        0 => "",
        1 => pick(r, &["mild", "minimal", "slight", "mild"]),
        _ => pick(
            r,
            &[
                "moderate to severe",
                "moderate-to-severe",
                "significant",
                "moderate to advanced",
            ],
        ),
    }
}

fn narrowing_level(f: f64) -> usize {
    match f {
        f if f < 0.06 => 0,
        f if f < 0.18 => 1,
        _ => 2,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Writes an impression for the findings.
pub fn impression(f: &Findings, r: &mut Rng) -> String {
    let mut sentences: Vec<String> = Vec::new();
    let jsn = narrowing_sentence(f, r, &mut sentences);
    let ost = osteophyte_sentences(f, r, &mut sentences);
    progression_sentences(f, r, &mut sentences);
    other_findings(f, r, &mut sentences);
    // Order varies like real reports; the negations for fracture close most of them.
    rng::shuffle(r, &mut sentences);
    if rng::unit(r) < 0.7 {
        sentences.push(
            pick(
                r,
                &[
                    "No acute fracture or dislocation.",
                    "No acute fracture.",
                    "No fracture or dislocation is seen.",
                    "No acute osseous abnormality.",
                ],
            )
            .into(),
        );
    }
    let lead = lead(r, jsn.max(ost));
    format!("{lead}{}", sentences.join(" "))
}

/// The joint-space sentence, of the predominant compartment (the other is not graded);
/// returns that compartment's level.
fn narrowing_sentence(f: &Findings, r: &mut Rng, sentences: &mut Vec<String>) -> usize {
    let jsn = pick(
        r,
        &[
            "joint space narrowing",
            "joint space loss",
            "narrowing of the joint space",
            "cartilage space narrowing",
        ],
    );
    let medial = f.medial_narrowing >= f.lateral_narrowing;
    let level = narrowing_level(f.medial_narrowing.max(f.lateral_narrowing));
    match (level, medial) {
        (0, _) => sentences.push(
            pick(
                r,
                &[
                    "Joint spaces are preserved.",
                    "No significant joint space narrowing.",
                    "Joint space widths are maintained.",
                ],
            )
            .into(),
        ),
        (l, true) => sentences.push(format!(
            "{} {jsn} in the medial {}.",
            capitalise(degree(r, l)),
            pick(
                r,
                &[
                    "compartment",
                    "tibiofemoral compartment",
                    "femorotibial compartment"
                ]
            )
        )),
        (l, false) => sentences.push(format!(
            "{} lateral compartment {jsn}.",
            capitalise(degree(r, l))
        )),
    }
    level
}

/// Osteophytes; returns their level, 0-2.
fn osteophyte_sentences(f: &Findings, r: &mut Rng, sentences: &mut Vec<String>) -> usize {
    let ost = match f.osteophytes {
        o if o < 0.006 => 0,
        o if o < 0.025 => 1,
        _ => 2,
    };
    if ost == 0 {
        if rng::unit(r) < 0.6 {
            sentences.push(
                pick(
                    r,
                    &[
                        "No osteophytes.",
                        "No osteophyte formation.",
                        "No marginal spurring.",
                    ],
                )
                .into(),
            );
        }
    } else {
        let size = match ost {
            1 => pick(r, &["Small", "Tiny", "Small marginal"]),
            _ => pick(
                r,
                &["Definite", "Moderate to large", "Prominent", "Well-formed"],
            ),
        };
        let word = pick(
            r,
            &[
                "osteophytes",
                "osteophyte formation",
                "marginal spurring",
                "bony spurs",
            ],
        );
        let place = pick(
            r,
            &[
                "at the medial and lateral tibiofemoral margins",
                "along the tibial plateau margins",
                "at the femoral condyles and tibial plateau",
                "involving the joint margins",
            ],
        );
        sentences.push(format!("{size} {word} {place}."));
    }
    ost
}

/// The early signs a fast progressor shows: spurring of the medial tibial spine, then
/// subchondral change under the medial plateau. Written whatever the grade, as a radiologist
/// describes what is there.
fn progression_sentences(f: &Findings, r: &mut Rng, sentences: &mut Vec<String>) {
    if f.progression_signs > 0.55 {
        sentences.push(
            pick(
                r,
                &[
                    "Sharpening of the medial tibial spine.",
                    "Peaking of the tibial spines.",
                    "Spurring of the medial tibial spine.",
                    "Prominent tibial spines.",
                ],
            )
            .into(),
        );
    } else if rng::unit(r) < 0.25 {
        sentences.push("Tibial spines are unremarkable.".into());
    }
    if f.progression_signs > 0.85 {
        sentences.push(
            pick(
                r,
                &[
                    "Subchondral irregularity of the medial tibial plateau.",
                    "Early subchondral cystic change medially.",
                    "Subchondral bone changes beneath the medial plateau.",
                ],
            )
            .into(),
        );
    }
}

/// Sclerosis, effusion, alignment and hardware.
fn other_findings(f: &Findings, r: &mut Rng, sentences: &mut Vec<String>) {
    if f.sclerosis > 0.12 {
        sentences.push(
            pick(
                r,
                &[
                    "Subchondral sclerosis.",
                    "Subchondral sclerosis of the medial tibial plateau.",
                    "Sclerosis of the subchondral bone.",
                ],
            )
            .into(),
        );
    } else if rng::unit(r) < 0.3 {
        sentences.push("No subchondral sclerosis.".into());
    }
    if f.effusion {
        sentences.push(
            pick(
                r,
                &[
                    "Small joint effusion.",
                    "Suprapatellar effusion.",
                    "Moderate knee joint effusion.",
                ],
            )
            .into(),
        );
    } else if rng::unit(r) < 0.5 {
        sentences.push(
            pick(
                r,
                &[
                    "No joint effusion.",
                    "No effusion.",
                    "No suprapatellar effusion.",
                ],
            )
            .into(),
        );
    }
    if f.alignment_deg > 4.0 {
        sentences.push(
            pick(
                r,
                &["Varus alignment.", "Mild varus deformity.", "Genu varum."],
            )
            .into(),
        );
    } else if f.alignment_deg < -3.0 {
        sentences.push(pick(r, &["Valgus alignment.", "Mild valgus deformity."]).into());
    }
    if f.hardware {
        sentences.push(
            pick(
                r,
                &[
                    "Orthopedic hardware in the proximal tibia.",
                    "Postsurgical screw in the proximal tibia without evidence of loosening.",
                ],
            )
            .into(),
        );
    }
}

/// The opening phrase for the overall level of degenerative change.
fn lead(r: &mut Rng, level: usize) -> &'static str {
    match level {
        0 => pick(
            r,
            &[
                "",
                "Unremarkable knee radiograph. ",
                "Normal bony alignment. ",
            ],
        ),
        1 => pick(
            r,
            &[
                "",
                "Mild degenerative change. ",
                "Early degenerative change. ",
            ],
        ),
        _ => pick(
            r,
            &[
                "",
                "Degenerative change of the knee. ",
                "Osteoarthritic change. ",
                "Moderate to advanced degenerative change. ",
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impressions_follow_findings_and_never_state_a_grade() {
        let mut r = rng::stream("t", &[], 1);
        let severe = Findings {
            medial_narrowing: 0.6,
            lateral_narrowing: 0.2,
            osteophytes: 0.07,
            sclerosis: 0.35,
            effusion: true,
            alignment_deg: 6.0,
            hardware: true,
            progression_signs: 1.2,
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let text = impression(&severe, &mut r);
            let lower = text.to_lowercase();
            assert!(lower.contains("medial"), "{text}");
            assert!(lower.contains("effusion"), "{text}");
            assert!(lower.contains("tibial spine"), "{text}");
            assert!(lower.contains("subchondral"), "{text}");
            assert!(
                lower.contains("screw") || lower.contains("hardware"),
                "{text}"
            );
            assert!(
                !lower.contains("kl") && !lower.contains("kellgren") && !lower.contains("grade"),
                "{text}"
            );
            seen.insert(text);
        }
        assert!(seen.len() > 30, "reports vary");
        // A slow progressor's report never names the signs of a fast one.
        let slow = Findings {
            progression_signs: 0.2,
            ..severe
        };
        for _ in 0..50 {
            let text = impression(&slow, &mut r).to_lowercase();
            assert!(
                !text.contains("spurring of the medial tibial spine"),
                "{text}"
            );
            assert!(
                !text.contains("cystic") && !text.contains("irregularity"),
                "{text}"
            );
        }
    }

    /// Two KL 3 knees, one just into the grade and one near KL 4, get the same impression
    /// when their prognostic findings agree: the grade's findings read alike within it.
    #[test]
    fn kl3_knees_read_alike_but_for_prognosis() {
        use crate::data::synth::knee;
        let at = |s: f64, signs: f64| Findings {
            medial_narrowing: knee::medial_narrowing(s, 2.0),
            lateral_narrowing: knee::lateral_narrowing(s, 2.0),
            osteophytes: knee::osteophyte_size(s),
            sclerosis: knee::sclerosis(s),
            effusion: false,
            alignment_deg: 2.0,
            hardware: false,
            progression_signs: signs,
        };
        let mut differ = 0;
        for seed in 0..40 {
            let text = |f: &Findings| impression(f, &mut rng::stream("t", &[], seed));
            assert_eq!(text(&at(3.05, 0.2)), text(&at(3.95, 0.2)), "seed {seed}");
            differ += usize::from(text(&at(3.05, 0.2)) != text(&at(3.05, 1.2)));
        }
        assert_eq!(differ, 40, "a fast progressor's impression always differs");
    }
}
