//! 4-year structural outcomes from longitudinal KL readings, by stated rules.
//!
//! - incidence: baseline KL 0–1 → KL ≥ 2 at any follow-up visit within the horizon;
//! - progression: baseline KL ≥ `progression_min_baseline_kl` (and ≤ 3) → KL ≥ baseline + 1 at
//!   any follow-up visit within the horizon;
//! - a knee replacement within the horizon is an event (`knee_replacement = "event"`) or takes
//!   the knee out of both outcomes (`"exclude"`);
//! - a knee without the event is a negative only if it was read at the horizon visit (the last
//!   scheduled visit at or before the horizon); otherwise it lacks the needed follow-up and is
//!   excluded. Every exclusion is counted.
//!
//! The horizon is 48 months for the OAI and 60 months for MOST by default (MOST has no 48-month
//! visit; its 4-year rule uses the 60-month visit).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::Side;
use crate::data::real::readings::{Format, Reading, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replacement {
    Event,
    Exclude,
}

/// The `[outcomes]` table of a descriptor; unset fields take the format's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeSpec {
    #[serde(default)]
    pub horizon_months: Option<i64>,
    #[serde(default)]
    pub progression_min_baseline_kl: Option<u8>,
    #[serde(default)]
    pub knee_replacement: Option<Replacement>,
}

/// Resolved rules (part of the cohort's identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub horizon_months: i64,
    /// The visit a negative must have been read at.
    pub followup_visit: i64,
    pub progression_min_baseline_kl: u8,
    pub knee_replacement: Replacement,
}

impl Rules {
    pub fn resolve(spec: &OutcomeSpec, format: Format) -> Result<Rules, String> {
        let horizon = spec.horizon_months.unwrap_or(match format {
            Format::Oai => 48,
            Format::Most => 60,
        });
        let followup = format
            .visits()
            .iter()
            .map(|v| v.1)
            .filter(|&m| m > 0 && m <= horizon)
            .max()
            .ok_or_else(|| {
                format!(
                    "`[outcomes] horizon_months = {horizon}`: no {} follow-up visit at or before it",
                    format.name()
                )
            })?;
        let min = spec.progression_min_baseline_kl.unwrap_or(1);
        if !(1..=3).contains(&min) {
            return Err(format!(
                "`[outcomes] progression_min_baseline_kl = {min}`: expected 1, 2 or 3"
            ));
        }
        Ok(Rules {
            horizon_months: horizon,
            followup_visit: followup,
            progression_min_baseline_kl: min,
            knee_replacement: spec.knee_replacement.unwrap_or(Replacement::Event),
        })
    }

    /// The rules as cohort metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "outcomes.horizon_months".into(),
                self.horizon_months.to_string(),
            ),
            (
                "outcomes.followup_visit".into(),
                self.followup_visit.to_string(),
            ),
            (
                "outcomes.progression_min_baseline_kl".into(),
                self.progression_min_baseline_kl.to_string(),
            ),
            (
                "outcomes.knee_replacement".into(),
                match self.knee_replacement {
                    Replacement::Event => "event",
                    Replacement::Exclude => "exclude",
                }
                .into(),
            ),
            (
                "outcomes.incidence".into(),
                "baseline KL 0-1 -> KL >= 2 at a follow-up within the horizon".into(),
            ),
            (
                "outcomes.progression".into(),
                "baseline KL in [min, 3] -> KL >= baseline + 1 at a follow-up within the horizon"
                    .into(),
            ),
        ])
    }
}

/// A knee's two outcomes (`None`: not eligible or excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub incidence_4y: Option<u8>,
    pub progression_4y: Option<u8>,
}

/// Counters of what happened to each knee, by outcome.
#[derive(Clone, Debug, Default)]
pub struct Tally(pub BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, what: String) {
        *self.0.entry(what).or_default() += 1;
    }
}

/// Derives every knee's outcomes. `readings` must be sorted by (id, side, visit).
pub fn derive(readings: &[Reading], rules: &Rules) -> (BTreeMap<(String, Side), Outcomes>, Tally) {
    let mut out = BTreeMap::new();
    let mut tally = Tally::default();
    let mut i = 0;
    while i < readings.len() {
        let mut j = i;
        while j < readings.len()
            && readings[j].id == readings[i].id
            && readings[j].side == readings[i].side
        {
            j += 1;
        }
        let knee = &readings[i..j];
        let o = one(knee, rules, &mut tally);
        out.insert((readings[i].id.clone(), readings[i].side), o);
        i = j;
    }
    (out, tally)
}

fn one(knee: &[Reading], rules: &Rules, tally: &mut Tally) -> Outcomes {
    let at = |v: i64| knee.iter().find(|r| r.visit == v).map(|r| r.value);
    let baseline = match at(0) {
        Some(Value::Kl(g)) => g,
        Some(Value::KneeReplacement) => {
            tally.add("both: knee replaced at baseline (excluded)".into());
            return Outcomes::default();
        }
        _ => {
            tally.add("both: no usable baseline reading (excluded)".into());
            return Outcomes::default();
        }
    };
    let follow: Vec<Value> = knee
        .iter()
        .filter(|r| r.visit > 0 && r.visit <= rules.horizon_months)
        .map(|r| r.value)
        .collect();
    let replaced = follow.contains(&Value::KneeReplacement);
    let read_at_followup = matches!(at(rules.followup_visit), Some(Value::Kl(_)));
    let mut decide = |name: &str, event: bool| -> Option<u8> {
        if replaced && rules.knee_replacement == Replacement::Exclude {
            tally.add(format!(
                "{name}: knee replaced within the horizon (excluded)"
            ));
            None
        } else if event || (replaced && rules.knee_replacement == Replacement::Event) {
            tally.add(format!("{name}: positive"));
            Some(1)
        } else if read_at_followup {
            tally.add(format!("{name}: negative"));
            Some(0)
        } else {
            tally.add(format!(
                "{name}: no reading at month {} (excluded)",
                rules.followup_visit
            ));
            None
        }
    };
    let max_follow = follow
        .iter()
        .filter_map(|v| match v {
            Value::Kl(g) => Some(*g),
            _ => None,
        })
        .max();
    let incidence = if baseline <= 1 {
        decide("incidence", max_follow.is_some_and(|g| g >= 2))
    } else {
        None
    };
    let progression = if baseline >= rules.progression_min_baseline_kl && baseline <= 3 {
        decide("progression", max_follow.is_some_and(|g| g > baseline))
    } else {
        if baseline == 4 {
            tally.add("progression: baseline KL 4 cannot progress (not eligible)".into());
        }
        None
    };
    Outcomes {
        incidence_4y: incidence,
        progression_4y: progression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knee(values: &[(i64, Value)]) -> Vec<Reading> {
        values
            .iter()
            .map(|&(visit, value)| Reading {
                id: "k".into(),
                side: Side::R,
                visit,
                value,
            })
            .collect()
    }

    fn rules(replacement: Replacement) -> Rules {
        Rules::resolve(
            &OutcomeSpec {
                knee_replacement: Some(replacement),
                ..OutcomeSpec::default()
            },
            Format::Oai,
        )
        .unwrap()
    }

    fn outcome(values: &[(i64, Value)], r: &Rules) -> (Option<u8>, Option<u8>, Vec<String>) {
        let (o, t) = derive(&knee(values), r);
        let o = o[&("k".to_string(), Side::R)];
        (o.incidence_4y, o.progression_4y, t.0.into_keys().collect())
    }

    use Value::{Kl, KneeReplacement as Tkr, Missing};

    #[test]
    fn hand_computed_oai_outcomes() {
        let r = rules(Replacement::Event);
        assert_eq!(r.followup_visit, 48);
        // KL0 → 2 at 24 months: incident; not eligible for progression at baseline 0.
        let (inc, prog, _) = outcome(&[(0, Kl(0)), (24, Kl(2)), (48, Kl(2))], &r);
        assert_eq!((inc, prog), (Some(1), None));
        let (inc, prog, _) = outcome(&[(0, Kl(1)), (12, Kl(1)), (48, Kl(1))], &r);
        assert_eq!((inc, prog), (Some(0), Some(0)));
        // KL1 → 2 at 36 months (no 48-month reading): positive for both, no follow-up needed.
        let (inc, prog, _) = outcome(&[(0, Kl(1)), (36, Kl(2))], &r);
        assert_eq!((inc, prog), (Some(1), Some(1)));
        // KL2 → 3 at 72 months only: beyond the horizon, negative at 48.
        let (inc, prog, _) = outcome(&[(0, Kl(2)), (48, Kl(2)), (72, Kl(3))], &r);
        assert_eq!((inc, prog), (None, Some(0)));
        // No 48-month reading and no event: excluded, counted.
        let (inc, prog, why) = outcome(&[(0, Kl(1)), (24, Kl(1))], &r);
        assert_eq!((inc, prog), (None, None));
        assert!(
            why.contains(&"incidence: no reading at month 48 (excluded)".to_string()),
            "{why:?}"
        );
        // Baseline KL4: not eligible for either.
        let (inc, prog, why) = outcome(&[(0, Kl(4)), (48, Kl(4))], &r);
        assert_eq!((inc, prog), (None, None));
        assert!(why[0].contains("baseline KL 4"), "{why:?}");
        // Missing baseline: excluded.
        let (_, _, why) = outcome(&[(0, Missing), (48, Kl(3))], &r);
        assert_eq!(why, ["both: no usable baseline reading (excluded)"]);
    }

    #[test]
    fn knee_replacement_rules() {
        let values = [(0, Kl(3)), (36, Tkr)];
        let (_, prog, _) = outcome(&values, &rules(Replacement::Event));
        assert_eq!(prog, Some(1));
        let (_, prog, why) = outcome(&values, &rules(Replacement::Exclude));
        assert_eq!(prog, None);
        assert_eq!(
            why,
            ["progression: knee replaced within the horizon (excluded)"]
        );
        // A replacement after the horizon does not count.
        let (_, prog, _) = outcome(
            &[(0, Kl(3)), (48, Kl(3)), (72, Tkr)],
            &rules(Replacement::Event),
        );
        assert_eq!(prog, Some(0));
    }

    #[test]
    fn progression_threshold_and_most_horizon() {
        let r2 = Rules::resolve(
            &OutcomeSpec {
                progression_min_baseline_kl: Some(2),
                ..OutcomeSpec::default()
            },
            Format::Oai,
        )
        .unwrap();
        let (inc, prog, _) = outcome(&[(0, Kl(1)), (48, Kl(2))], &r2);
        assert_eq!((inc, prog), (Some(1), None));
        let most = Rules::resolve(&OutcomeSpec::default(), Format::Most).unwrap();
        assert_eq!((most.horizon_months, most.followup_visit), (60, 60));
        // At 60 months in MOST; the 84-month visit is beyond the horizon.
        let (inc, _, _) = outcome(&[(0, Kl(0)), (30, Kl(1)), (60, Kl(1)), (84, Kl(2))], &most);
        assert_eq!(inc, Some(0));
        let (inc, _, _) = outcome(&[(0, Kl(0)), (30, Kl(1)), (84, Kl(2))], &most);
        assert_eq!(inc, None);
        assert!(
            Rules::resolve(
                &OutcomeSpec {
                    horizon_months: Some(6),
                    ..OutcomeSpec::default()
                },
                Format::Oai
            )
            .is_err()
        );
    }
}
