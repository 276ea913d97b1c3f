//! The drain signal as a request extension and axum extractor. See [`Draining`].

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use lifecycle_hooks::{LifecycleHandle, Milestone};

use crate::connection::ConnShared;

/// The lifecycle's drain signal, for handlers whose responses last: a server-sent-events stream
/// ends when [`draining`](Draining::draining) completes, a WebSocket sends its close frame (code
/// 1001, "going away").
///
/// Every request served by an [`HttpServer`](crate::HttpServer) carries one in its extensions;
/// in axum, take it as an extractor. It is cheap to clone.
///
/// ```
/// use axum::response::sse::{Event, Sse};
/// use futures::stream::{self, Stream, StreamExt};
/// use lifecycle_hooks_http::Draining;
///
/// async fn events(draining: Draining) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
///     let ticks = stream::iter(0..).map(|n| Ok(Event::default().data(format!("tick {n}"))));
///     // The stream ends, and the response with it, when the service starts draining.
///     Sse::new(ticks.take_until(draining.draining().into_future()))
/// }
/// # let _ = axum::Router::<()>::new().route("/events", axum::routing::get(events));
/// ```
#[derive(Clone)]
pub struct Draining {
    // The request's connection, through which the lifecycle is reached: its reference count is
    // touched by this connection's requests only, where a cloned handle's would be shared by
    // every request of every connection.
    conn: Arc<ConnShared>,
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining")
            .field("draining", &self.draining().is_reached())
            .field("cancelled", &self.cancelled().is_reached())
            .finish()
    }
}

impl Draining {
    pub(crate) fn new(conn: Arc<ConnShared>) -> Self {
        Draining { conn }
    }

    /// The drain: reached right after intake stops. Await it to end long responses; ask
    /// [`Milestone::is_reached`] to check without waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the future owns what it needs.
    pub fn draining(&self) -> Milestone {
        self.handle().draining()
    }

    /// The drain deadline (or a second signal escalating): answer at once. Whatever is still
    /// running when the exit phase begins is cut by the server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the future owns what it needs.
    pub fn cancelled(&self) -> Milestone {
        self.handle().cancelled()
    }

    /// The lifecycle the request is served under.
    pub fn handle(&self) -> &LifecycleHandle {
        self.conn.server.handle()
    }
}

/// Takes the `Draining` the server put in the request's extensions; a request served some
/// other way (plain `axum::serve`, a test calling the router directly) is rejected with 500.
impl<S: Send + Sync> FromRequestParts<S> for Draining {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Draining>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "no Draining extension: the request was not served by lifecycle_hooks_http\n",
        ))
    }
}
