//! How a deploy replaces what runs: from the state of the agent's two slots (blue, green) and the
//! new configuration, in place or beside it (blue/green). Pure.

use super::docker::Container;
use super::model::Package;
use nasiko_contract::stream::Strategy;
use nasiko_contract::Slot;

/// The way a deploy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The slot's running container has exactly this configuration: compose recreates nothing.
    Unchanged(Slot),
    /// Replace what runs in `slot` (requests may drop meanwhile), for `why`.
    InPlace { slot: Slot, why: &'static str },
    /// Start in `new` beside `live`, which serves until the new version is ready and the sidecar
    /// has moved the traffic; then `live` goes. `rolling`: the new replicas one at a time, each
    /// ready before the next starts (the sidecar drains an old replica per new one ready).
    BlueGreen {
        live: Slot,
        new: Slot,
        rolling: bool,
    },
}

/// The agent's slots as Docker has them now: `[blue, green]`.
pub type Now = [Option<Container>; 2];

fn of(now: &Now, slot: Slot) -> Option<&Container> {
    now[slot as usize].as_ref()
}

/// Docker's `Created` as a sortable text: the fraction of RFC 3339 Nano written out to 9 digits
/// (Docker trims its trailing zeros, which would sort `.5Z` after `.51Z`).
fn sortable(created: &str) -> String {
    let t = created.trim_end_matches('Z');
    match t.split_once('.') {
        Some((s, f)) => format!("{s}.{f:0<9}"),
        None => format!("{t}.000000000"),
    }
}

/// The slot that serves now: the running one; both running (a switch cut short), the one with
/// configuration `hash`, else the newer (the sidecar serves the newest ready generation).
pub fn live(now: &Now, hash: &str) -> Option<Slot> {
    let running: Vec<Slot> = Slot::BOTH
        .into_iter()
        .filter(|s| of(now, *s).is_some_and(Container::running))
        .collect();
    let hash_of = |s: Slot| of(now, s).and_then(|c| c.label(super::DEPLOY_HASH_LABEL));
    running
        .iter()
        .copied()
        .find(|s| hash_of(*s) == Some(hash))
        .or_else(|| {
            running
                .iter()
                .copied()
                .max_by_key(|s| of(now, *s).map(|c| sortable(&c.created)))
        })
}

/// Whether the package can run twice side by side: its agent's service alone, with no named
/// volume (another project's copy would start empty) — else an update goes in place.
pub fn doubles(pkg: &Package) -> bool {
    pkg.services.len() == 1 && pkg.volumes.is_empty()
}

/// How a deploy of configuration `hash` goes, given what runs now.
pub fn choose(now: &Now, hash: &str, strategy: Strategy, doubles: bool) -> Way {
    let Some(live) = live(now, hash) else {
        // nothing runs: the slot that has a container (stopped), else blue
        let slot = Slot::BOTH
            .into_iter()
            .find(|s| of(now, *s).is_some())
            .unwrap_or(Slot::Blue);
        return Way::InPlace {
            slot,
            why: "nothing of the agent is running",
        };
    };
    if of(now, live).and_then(|c| c.label(super::DEPLOY_HASH_LABEL)) == Some(hash) {
        return Way::Unchanged(live);
    }
    if strategy == Strategy::Recreate {
        return Way::InPlace {
            slot: live,
            why: "update_strategy=recreate: replaced in place",
        };
    }
    if !doubles {
        return Way::InPlace {
            slot: live,
            why: "the package has services besides its agent's, or a named volume, which a second copy would not share: updated in place",
        };
    }
    Way::BlueGreen {
        live,
        new: live.other(),
        rolling: strategy == Strategy::Rolling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BG: Strategy = Strategy::BlueGreen;

    fn c(status: &str, hash: &str, created: &str) -> Option<Container> {
        Some(Container {
            status: status.into(),
            created: created.into(),
            labels: [(super::super::DEPLOY_HASH_LABEL.to_string(), hash.into())].into(),
            ..Container::default()
        })
    }

    const T1: &str = "2026-12-05T10:00:00.5Z";
    const T2: &str = "2026-12-05T10:00:00.51Z";

    #[test]
    fn a_first_deploy_goes_to_blue_and_a_stopped_slot_is_reused() {
        let none: Now = [None, None];
        assert_eq!(
            choose(&none, "h", BG, true),
            Way::InPlace {
                slot: Slot::Blue,
                why: "nothing of the agent is running"
            }
        );
        let green_stopped: Now = [None, c("exited", "h0", T1)];
        assert!(matches!(
            choose(&green_stopped, "h", BG, true),
            Way::InPlace {
                slot: Slot::Green,
                ..
            }
        ));
    }

    #[test]
    fn an_update_starts_beside_the_running_slot_unless_it_cannot_or_is_told_not_to() {
        let blue: Now = [c("running", "h1", T1), None];
        assert_eq!(
            choose(&blue, "h2", BG, true),
            Way::BlueGreen {
                live: Slot::Blue,
                new: Slot::Green,
                rolling: false
            }
        );
        assert_eq!(
            choose(&blue, "h2", Strategy::Rolling, true),
            Way::BlueGreen {
                live: Slot::Blue,
                new: Slot::Green,
                rolling: true
            }
        );
        let green: Now = [c("exited", "h0", T1), c("running", "h1", T2)];
        assert_eq!(
            choose(&green, "h2", BG, true),
            Way::BlueGreen {
                live: Slot::Green,
                new: Slot::Blue,
                rolling: false
            },
            "a kept (stopped) old version is the next update's slot"
        );
        assert!(matches!(
            choose(&blue, "h2", Strategy::Recreate, true),
            Way::InPlace {
                slot: Slot::Blue,
                why: "update_strategy=recreate: replaced in place"
            }
        ));
        assert!(matches!(
            choose(&blue, "h2", BG, false),
            Way::InPlace {
                slot: Slot::Blue,
                ..
            }
        ));
        assert_eq!(choose(&blue, "h1", BG, true), Way::Unchanged(Slot::Blue));
        assert_eq!(
            choose(&blue, "h1", Strategy::Recreate, true),
            Way::Unchanged(Slot::Blue),
            "recreate or not, an unchanged configuration is left as it runs"
        );
    }

    #[test]
    fn a_switch_cut_short_resumes_with_the_new_version_or_the_newer_slot() {
        // killed after the new version (green, h2) was up, before blue went
        let both: Now = [c("running", "h1", T1), c("running", "h2", T2)];
        assert_eq!(choose(&both, "h2", BG, true), Way::Unchanged(Slot::Green));
        assert_eq!(choose(&both, "h1", BG, true), Way::Unchanged(Slot::Blue));
        // another version now: beside the newer, which the sidecar serves (.51 s is after .5 s)
        assert_eq!(
            choose(&both, "h3", BG, true),
            Way::BlueGreen {
                live: Slot::Green,
                new: Slot::Blue,
                rolling: false
            }
        );
        let swapped: Now = [c("running", "h1", T2), c("running", "h2", T1)];
        assert_eq!(live(&swapped, "h3"), Some(Slot::Blue));
    }
}
