//! io_uring driver: being written; until then `probe` reports it unavailable.

use crate::worker::WorkerCore;

pub(crate) fn probe() -> Result<(), String> {
    Err("the io_uring driver is not built yet".into())
}

pub(crate) fn run(core: WorkerCore) -> std::io::Result<()> {
    crate::mmsg::run(core)
}
