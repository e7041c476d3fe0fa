//! Pod networking: veth pairs, IPAM from the node's podCIDR, routes between nodes (rtnetlink), masquerade for
//! traffic leaving the cluster (nftables), and removing all of it again.
pub mod cidr;
pub mod ipam;
pub mod masquerade;
pub mod masquerade_sync;
pub mod names;
pub mod nft;
pub mod nl;
pub mod node_routes;
pub mod routes;
pub mod teardown;
pub mod veth;
