//! When an Admin API write reaches the proxy (`TIMING.md`): Kong's `worker_consistency` and
//! `worker_state_update_frequency`, read from the environment as Kong reads its `KONG_*`
//! settings and checked as Kong's `conf_loader` checks them, and the two rebuild timers of DB
//! mode under `eventual` (`kong/runloop/handler.lua`, `init_worker`).

use std::time::Duration;

/// `worker_consistency` (`kong/templates/kong_defaults.lua`: `eventual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The router and the plugins iterator are rebuilt on the request after a change
    /// (`get_updated_router`, `get_updated_plugins_iterator`).
    Strict,
    /// Each is rebuilt by its own timer, every `frequency` (`router-rebuild`,
    /// `plugins-iterator-rebuild`).
    Eventual,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Strict => "strict",
            Consistency::Eventual => "eventual",
        }
    }
}

/// The two settings together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub consistency: Consistency,
    /// `worker_state_update_frequency` (seconds in kong.conf; default 5).
    pub frequency: Duration,
}

impl Default for Timing {
    /// Kong's defaults: `eventual`, every 5 s (`kong_defaults.lua`).
    fn default() -> Self {
        Timing {
            consistency: Consistency::Eventual,
            frequency: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// `strict`: every write is in the proxy from the next request on.
    pub fn strict() -> Self {
        Timing {
            consistency: Consistency::Strict,
            ..Timing::default()
        }
    }

    /// `eventual` with the given frequency.
    pub fn eventual(frequency: Duration) -> Self {
        Timing {
            consistency: Consistency::Eventual,
            frequency,
        }
    }

    /// Read `KONG_WORKER_CONSISTENCY` and `KONG_WORKER_STATE_UPDATE_FREQUENCY` through `var`
    /// (unset or empty: Kong's default, as `parse_value` drops `""`). Errors carry Kong's
    /// `check_and_parse` wording; Kong refuses to start on them.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Timing, String> {
        let mut t = Timing::default();
        let set = |k: &str| {
            var(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = set("KONG_WORKER_CONSISTENCY") {
            t.consistency = match v.as_str() {
                "strict" => Consistency::Strict,
                "eventual" => Consistency::Eventual,
                _ => {
                    return Err(format!(
                        "worker_consistency has an invalid value: '{v}' (strict, eventual)"
                    ))
                }
            };
        }
        if let Some(v) = set("KONG_WORKER_STATE_UPDATE_FREQUENCY") {
            // Lua's tonumber: decimal, fractions and exponents; not inf or nan
            let n: f64 = v
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("worker_state_update_frequency is not a number: '{v}'"))?;
            if n <= 0.0 {
                return Err("worker_state_update_frequency must be greater than 0".into());
            }
            t.frequency = Duration::from_secs_f64(n);
        }
        Ok(t)
    }

    /// The value `GET /` reports: an integer when it is one, as Lua's number prints.
    pub fn frequency_json(&self) -> serde_json::Value {
        let s = self.frequency.as_secs_f64();
        if s.fract() == 0.0 && s < 1e15 {
            serde_json::json!(s as u64)
        } else {
            serde_json::json!(s)
        }
    }

    /// The first tick of the plugins iterator's timer, after the emulator starts. The router's
    /// timer first fires one period after start (`named_every`); Kong gives the two timers no
    /// common phase (each worker has its own pair, and a request meets one worker's), so the
    /// emulator places the plugins timer half a period after the router's: the two are
    /// visibly independent, and a route can reach the proxy before a plugin written earlier.
    pub fn plugins_timer_start(&self) -> Duration {
        self.frequency + self.frequency / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_are_kongs() {
        let t = Timing::from_env(env(&[])).unwrap();
        assert_eq!(t.consistency, Consistency::Eventual);
        assert_eq!(t.frequency, Duration::from_secs(5));
        assert_eq!(t.frequency_json(), serde_json::json!(5));
    }

    #[test]
    fn values_are_read_and_checked() {
        let t = Timing::from_env(env(&[
            ("KONG_WORKER_CONSISTENCY", "strict"),
            ("KONG_WORKER_STATE_UPDATE_FREQUENCY", "0.25"),
        ]))
        .unwrap();
        assert_eq!(t.consistency, Consistency::Strict);
        assert_eq!(t.frequency, Duration::from_millis(250));
        assert_eq!(t.frequency_json(), serde_json::json!(0.25));
        let bad = |k, v| Timing::from_env(env(&[(k, v)])).unwrap_err();
        assert_eq!(
            bad("KONG_WORKER_CONSISTENCY", "fast"),
            "worker_consistency has an invalid value: 'fast' (strict, eventual)"
        );
        assert_eq!(
            bad("KONG_WORKER_STATE_UPDATE_FREQUENCY", "0"),
            "worker_state_update_frequency must be greater than 0"
        );
        assert_eq!(
            bad("KONG_WORKER_STATE_UPDATE_FREQUENCY", "-1"),
            "worker_state_update_frequency must be greater than 0"
        );
        assert_eq!(
            bad("KONG_WORKER_STATE_UPDATE_FREQUENCY", "soon"),
            "worker_state_update_frequency is not a number: 'soon'"
        );
        // an empty value is unset (Kong's parse_value), so the default holds
        let t = Timing::from_env(env(&[("KONG_WORKER_STATE_UPDATE_FREQUENCY", "")])).unwrap();
        assert_eq!(t.frequency, Duration::from_secs(5));
    }
}
