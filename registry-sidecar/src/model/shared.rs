//! JSON values that many of Kong's rows hold alike, kept once: every agent's plugin configs and
//! upstream health checks come back from Kong with the same defaults filled in, and at 50 agents
//! their copies were a quarter of the sidecar's live heap. A row read from Kong holds an `Arc` to
//! the one copy of its value (`#[serde(with = "shared")]`); the table keeps only weak references.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

struct Table {
    /// a value's JSON text → the value, while any row holds it
    values: HashMap<String, Weak<Value>>,
    /// the table's size at which values no row holds any more are dropped from it
    sweep_at: usize,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        values: HashMap::new(),
        sweep_at: 64,
    })
});

/// The one copy of `v` (the first one seen while any holder of it lives).
pub fn shared(v: Value) -> Arc<Value> {
    let key = v.to_string();
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(held) = t.values.get(&key).and_then(Weak::upgrade) {
        return held;
    }
    if t.values.len() >= t.sweep_at {
        t.values.retain(|_, w| w.strong_count() > 0);
        t.sweep_at = (2 * t.values.len()).max(64);
    }
    let v = Arc::new(v);
    t.values.insert(key, Arc::downgrade(&v));
    v
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Value>, D::Error> {
    Value::deserialize(d).map(shared)
}

pub fn serialize<S: Serializer>(v: &Arc<Value>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_are_one_copy_and_others_are_not() {
        let a = shared(json!({"active": {"timeout": 1}, "unique": "shared-test-a"}));
        let b = shared(json!({"active": {"timeout": 1}, "unique": "shared-test-a"}));
        let c = shared(json!({"active": {"timeout": 2}, "unique": "shared-test-a"}));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(
            *c,
            json!({"active": {"timeout": 2}, "unique": "shared-test-a"})
        );
    }

    #[test]
    fn a_value_no_row_holds_is_let_go() {
        let weak = Arc::downgrade(&shared(json!({"unique": "shared-test-b"})));
        assert!(weak.upgrade().is_none(), "the table held it");
        let again = shared(json!({"unique": "shared-test-b"}));
        assert_eq!(*again, json!({"unique": "shared-test-b"}));
    }

    #[test]
    fn rows_read_from_kong_share_their_config() {
        let row = |id: &str| {
            json!({"id": id, "name": "key-auth", "enabled": true,
                   "config": {"key_names": ["apikey"], "hide_credentials": false, "unique": "shared-test-c"}})
        };
        let (a, b) = (
            crate::model::PluginRow::read(&row("1")),
            crate::model::PluginRow::read(&row("2")),
        );
        let (a, b) = (a.fields.unwrap(), b.fields.unwrap());
        assert!(Arc::ptr_eq(&a.config, &b.config));
        // and it is written back as the value itself
        assert_eq!(
            serde_json::to_value(&a).unwrap()["config"]["key_names"],
            json!(["apikey"])
        );
    }
}
