//! `gatehouse review`: find, replay and search recorded sessions in the terminal, and the
//! non-interactive `play` and `export`.
//!
//! Layered so that almost everything is tested without a terminal: `cast` and `sqllog` read
//! recordings (parsers over bytes), `player` is the emulator with snapshots (time is an
//! input), `catalog` and `filter` make the session list, `index` searches, `app` turns
//! events into state, `ui` draws state into a ratatui `Frame` (tests use `TestBackend`),
//! and only `run` owns the terminal. Recordings are only ever read. Text the operator or the
//! target chose is shown through `printable`, never raw.

pub mod actions;
pub mod app;
pub mod cast;
pub mod catalog;
pub mod export;
pub mod filter;
pub mod follow;
pub mod index;
pub mod liveinfo;
pub mod player;
pub mod printable;
pub mod replay_filter;
mod run;
pub mod sqllog;
pub mod ui;
mod views;

pub use actions::{Actions, StoreActions};
pub use app::App;
pub use catalog::{Catalog, RecordingStatus, SessionEntry, StoreCatalog, recording_status};
pub use index::SearchIndex;
pub use run::run;
