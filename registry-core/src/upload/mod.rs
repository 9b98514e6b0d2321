//! Upload sessions whose state lives in the store, so any replica can take any request.

pub mod content_range;
mod hash_feed;
mod hashed_body;
mod recent_states;
pub mod session;
pub mod state;

pub use content_range::ChunkRange;
pub use session::UploadSessions;
pub use state::UploadState;
