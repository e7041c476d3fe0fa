//! The pod runtime: pods as namespaces held by a sandbox process, containers as processes entered into them.
