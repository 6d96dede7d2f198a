//! A refused package: the one line to report. Every reader of a package (the YAML reader, the
//! model, the Dockerfile check, the policy, the read-back) refuses with it; it depends on none
//! of them, so none depends on another through it.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}
