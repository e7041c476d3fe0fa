//! Pod networking: veth pairs, IPAM from the node's podCIDR, and routes between nodes (rtnetlink).
