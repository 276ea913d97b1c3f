//! Errors of the HTTP adapter.

/// What can go wrong with an [`HttpServer`](crate::HttpServer)'s hooks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The server's hooks were added to a lifecycle that had already started them (a second
    /// lifecycle, or the same hooks registered twice under other names).
    #[error("HTTP server `{server}` was already started; register its hooks in one lifecycle only")]
    AlreadyStarted {
        /// The server's name.
        server: String,
    },
}
