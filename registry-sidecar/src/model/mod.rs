//! The typed Kong model, below everything that speaks to Kong: the specs the sidecar writes
//! (`spec`), the rows Kong returns (`row`), and the rules that compare them (`rule`). `desired`
//! builds specs, `diff` plans them against rows, `declarative` pushes them as one document and
//! `kong` sends them and reads the rows; none of them reads or writes a Kong field by hand.

pub mod row;
pub mod rule;
pub mod shared;
pub mod spec;

pub use row::{Head, Link, LinkKind, Row};
pub use spec::*;

pub type ServiceRow = Row<ServiceFields>;
pub type RouteRow = Row<RouteFields>;
pub type PluginRow = Row<PluginFields>;
pub type UpstreamRow = Row<UpstreamFields>;
pub type TargetRow = Row<TargetFields>;
