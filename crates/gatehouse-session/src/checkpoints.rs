//! Carries a live recording's checkpoints from its recorder task to the store, where they
//! are kept under the node's key: a recording cut short by a crash is then verified up to
//! its last checkpoint. Every front runs one per recording, the same way.

use gatehouse_recorder::Checkpoint;
use gatehouse_store::Store;
use tokio::sync::watch;

/// Stores each checkpoint `checkpoints` publishes (only the latest, when the store is slower
/// than the recorder) until the recorder ends. Start it after `recording_started`: the store
/// keeps checkpoints only of a recording it knows is live. A failed write is logged and the
/// next checkpoint tried; verification then falls back to the previous one.
pub async fn store_checkpoints(
    store: Store,
    session_id: String,
    mut checkpoints: watch::Receiver<Option<Checkpoint>>,
) {
    while checkpoints.changed().await.is_ok() {
        let Some(cp) = checkpoints.borrow_and_update().clone() else {
            continue;
        };
        // boxed: see `recording_opened`
        if let Err(e) =
            Box::pin(store.recording_checkpoint(&session_id, cp.events, &cp.digest)).await
        {
            tracing::warn!(error = %e, events = cp.events, "cannot store the recording's checkpoint");
        }
    }
}
