//! Support for cross-binary tests: the Kong Admin API emulator, the backend stand-in,
//! HTTP plumbing, and helpers for real Docker and Redis.

pub mod agents;
pub mod backend;
pub mod checkout;
pub mod docker;
pub mod fence;
pub mod http;
pub mod k8s_api;
pub mod kong;
pub mod process;
pub mod procfs;
pub mod python_base;
pub mod redis_server;
pub mod sockproxy;
pub mod stack;
