//! Where guards run. A broker busy with a login storm and bulk relays keeps its runtime's
//! workers full: a guard's timer that fires on that runtime waits in the same run queue as
//! every relay and key exchange, and deadlines slip by hundreds of milliseconds on a small
//! machine. `serve` therefore starts one thread of its own for enforcement (a current-thread
//! runtime with its own timer wheel) and every guard of the node runs there: its wakeups
//! queue only behind other guards, which do almost nothing when they wake.
//!
//! The thread asks the kernel for a higher priority ([`NICE`]): on a machine whose cores are
//! all busy (a storm's key exchanges, the targets' own processes on the same host), a fair
//! share of CPU is not enough for a wakeup to be on time. That needs `CAP_SYS_NICE` (or
//! root); without it the thread runs at normal priority and says so once in the log.
//!
//! Without [`start`] (library users, unit tests on tokio's paused clock) guards run on the
//! caller's runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

static ENFORCEMENT: OnceLock<Handle> = OnceLock::new();

/// The enforcement thread's nice value (normal is 0; lower runs first).
pub const NICE: i32 = -10;

/// Starts the process's enforcement thread (once; later calls do nothing).
pub fn start() -> std::io::Result<()> {
    if ENFORCEMENT.get().is_some() {
        return Ok(());
    }
    // I/O and timers only (see `ConnectionThreads::start`: no process driver to park with)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("gatehouse-enforcement")
        .build()?;
    let handle = runtime.handle().clone();
    if ENFORCEMENT.set(handle).is_err() {
        return Ok(()); // another caller won the race; this runtime is dropped unused
    }
    std::thread::Builder::new()
        .name("gatehouse-enforcement".into())
        // runs for the life of the process: guards are spawned onto it from any thread
        .spawn(move || {
            raise_priority();
            runtime.block_on(std::future::pending::<()>());
        })?;
    Ok(())
}

/// Sets this thread's nice value to [`NICE`] (Linux: `setpriority` on the thread's id).
fn raise_priority() {
    let tid = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(tid), NICE) {
        Ok(()) => tracing::debug!(nice = NICE, "enforcement thread priority raised"),
        Err(e) => tracing::info!(
            error = %e,
            "enforcement thread runs at normal priority (raising it needs CAP_SYS_NICE)"
        ),
    }
}

/// Whether guards run on the enforcement thread.
pub fn running() -> bool {
    ENFORCEMENT.get().is_some()
}

/// Spawns a guard (or anything on enforcement's clock) on the enforcement thread, or on the
/// current runtime when there is none.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match ENFORCEMENT.get() {
        Some(handle) => handle.spawn(future),
        None => tokio::spawn(future),
    }
}
