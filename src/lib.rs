//! Server-side sessions for any tower stack.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cookie;
mod error;
mod future;
mod id;
mod layer;
mod service;
mod storage;
pub mod store;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;

pub use crate::cookie::SameSite;
pub use crate::error::{SessionError, StoreError, StoreErrorKind};
pub use crate::future::ResponseFuture;
pub use crate::id::{ParseSessionIdError, SessionId};
pub use crate::layer::{
    SessionLayer, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ITEMS, DEFAULT_MAX_SESSION_BYTES,
};
pub use crate::service::SessionService;
pub use crate::storage::{SessionStorage, Storage};
pub use crate::store::memory::MemoryStore;
pub use crate::store::SessionStore;
