//! PLACEHOLDER (being written): the Dockerfile policy.
use super::policy::Refusal;
pub fn check(_text: &str, _build_args: &[(String, String)]) -> Result<(), Refusal> {
    Ok(())
}
