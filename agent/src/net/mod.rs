//! Pod networking: veth pairs, IPAM from the node's podCIDR, and routes between nodes (rtnetlink).
pub mod cidr;
pub mod ipam;
pub mod names;
pub mod nl;
pub mod node_routes;
pub mod routes;
pub mod veth;
