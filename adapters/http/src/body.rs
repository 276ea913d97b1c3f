//! The response body wrapper: the request stays in flight until its body has been sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use lifecycle_hooks::BoxError;

use crate::service::RequestGuard;

pin_project_lite::pin_project! {
    /// A response body that holds its request's guard until the last frame: a streamed response
    /// (server-sent events, a large download) is work until it ends.
    pub(crate) struct ResponseBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        guard: Option<RequestGuard>,
    }
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(inner: Either<B, Full<Bytes>>, guard: Option<RequestGuard>) -> Self {
        // hyper never polls a body that is empty from the start: the request completes with
        // its head.
        let guard = match guard {
            Some(guard) if inner.is_end_stream() => {
                guard.complete();
                None
            }
            guard => guard,
        };
        ResponseBody { inner, guard }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = inner.as_mut().poll_frame(cx);
        let ended = match &frame {
            Poll::Ready(None) => true,
            // hyper stops polling a body that says it has ended (a known length reached).
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            // A failed body leaves its request aborted: the guard drops with the body.
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            if let Some(guard) = this.guard.take() {
                guard.complete();
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
