//! `skiff-control`: the mini-cluster's apiserver, store, scheduler and controllers (not built yet).
fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "skiff-control is not implemented yet; the dataplane runs standalone with `skiff-agent proxy`"
    )
}
