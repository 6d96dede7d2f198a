//! What the sidecar last listed of its upstreams' targets. Kong 3.4 lists targets only upstream by
//! upstream (there is no `/targets`), so a full read costs one request per agent. Each upstream's
//! listing is kept until a write of ours touches it; a read lists only the upstreams that are new
//! or touched, and trusts the rest while Kong's ids of our tagged targets (one `GET /tags/{tag}`)
//! are exactly those kept. At most `REUSES` reads in a row trust kept listings, so what ids do not
//! show (a weight edited by hand, someone's new target) is seen within as many syncs. Pure.

use crate::model::TargetRow;
use std::collections::{BTreeMap, BTreeSet};

/// Reads in a row that may trust kept listings before everything is listed again.
pub const REUSES: u32 = 10;

#[derive(Debug, Clone, Default)]
pub struct TargetsSeen {
    /// upstream id → (its name, every target listed on it)
    by_upstream: BTreeMap<String, (String, Vec<TargetRow>)>,
    reuses_left: u32,
}

impl TargetsSeen {
    /// Which of `upstreams` (id, name) to list now: those not kept or named in `refresh` —
    /// every one when the kept listings may not be trusted again.
    pub fn to_list(
        &self,
        upstreams: &[(String, String)],
        refresh: &BTreeSet<String>,
    ) -> Vec<String> {
        upstreams
            .iter()
            .filter(|(id, name)| {
                self.reuses_left == 0
                    || refresh.contains(name)
                    || !self.by_upstream.contains_key(id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Take in fresh listings; upstreams that are gone are forgotten. `trusted`: some listings
    /// kept from before are used (one reuse spent), else all of it is fresh.
    pub fn take(
        &mut self,
        upstreams: &[(String, String)],
        listed: BTreeMap<String, Vec<TargetRow>>,
        trusted: bool,
    ) {
        let names: BTreeMap<&str, &str> = upstreams
            .iter()
            .map(|(id, n)| (id.as_str(), n.as_str()))
            .collect();
        self.by_upstream
            .retain(|id, _| names.contains_key(id.as_str()));
        for (id, targets) in listed {
            let name = names
                .get(id.as_str())
                .copied()
                .unwrap_or_default()
                .to_string();
            self.by_upstream.insert(id, (name, targets));
        }
        self.reuses_left = if trusted {
            self.reuses_left.saturating_sub(1)
        } else {
            REUSES
        };
    }

    /// The ids of the kept targets that carry `tag`.
    pub fn tagged_ids(&self, tag: &str) -> BTreeSet<String> {
        self.all()
            .filter(|t| t.has_tag(tag))
            .filter_map(|t| t.id().map(String::from))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &TargetRow> {
        self.by_upstream.values().flat_map(|(_, t)| t.iter())
    }

    /// Our writes changed these upstreams (by name): list them afresh next time.
    pub fn forget(&mut self, names: &BTreeSet<String>) {
        self.by_upstream.retain(|_, (n, _)| !names.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ups(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (format!("id-{n}"), n.to_string()))
            .collect()
    }

    #[test]
    fn only_new_or_touched_upstreams_are_listed_until_the_reuses_run_out() {
        let mut seen = TargetsSeen::default();
        let all = ups(&["a", "b"]);
        assert_eq!(
            seen.to_list(&all, &BTreeSet::new()).len(),
            2,
            "nothing kept"
        );
        let listed = all
            .iter()
            .map(|(id, _)| {
                (
                    id.clone(),
                    vec![TargetRow::read(
                        &json!({"id": format!("t-{id}"), "tags": ["own"]}),
                    )],
                )
            })
            .collect();
        seen.take(&all, listed, false);
        assert_eq!(seen.tagged_ids("own").len(), 2);
        assert!(seen.to_list(&all, &BTreeSet::new()).is_empty());
        let three = ups(&["a", "b", "c"]);
        assert_eq!(
            seen.to_list(&three, &BTreeSet::new()),
            ["id-c"],
            "a new upstream"
        );
        assert_eq!(
            seen.to_list(&all, &["b".to_string()].into()),
            ["id-b"],
            "touched"
        );
        seen.forget(&["a".to_string()].into());
        assert_eq!(
            seen.to_list(&all, &BTreeSet::new()),
            ["id-a"],
            "forgotten after a write"
        );
        for _ in 0..REUSES {
            seen.take(&all, BTreeMap::new(), true);
        }
        assert_eq!(
            seen.to_list(&all, &BTreeSet::new()).len(),
            2,
            "trusted long enough"
        );
        seen.take(&ups(&["b"]), BTreeMap::new(), false);
        assert_eq!(
            seen.tagged_ids("own"),
            ["t-id-b".to_string()].into(),
            "a gone upstream's go"
        );
    }
}
