//! Shared helpers for Skiff's end-to-end suites.
pub mod cluster;
pub mod fixture;
pub mod fixture_netns;
pub mod fixture_packet;
pub mod k8s_tools;
pub mod lab_client;
pub mod netns;
pub mod node_lab;
