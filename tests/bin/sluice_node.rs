//! The `sluice` program, as a binary of the test package: tests start it as separate
//! processes (`CARGO_BIN_EXE_sluice-node`), e.g. the nodes of a cluster.

fn main() -> anyhow::Result<()> {
    sluice_control::app::run()
}
