//! The per-request wrapper around the user's service: tracks each request as lifecycle work,
//! answers the readiness route, adds the drain signal, and marks late HTTP/1 responses
//! `Connection: close`.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use lifecycle_hooks::{BoxError, WorkGuard};
use tower::ServiceExt;
use tower::util::Oneshot;

use crate::body::ResponseBody;
use crate::connection::ConnShared;
use crate::draining::Draining;

/// One request in flight: a lifecycle work item, listed on its connection until dropped.
pub(crate) struct RequestGuard {
    conn: Arc<ConnShared>,
    /// Its place in the connection's list.
    key: usize,
    completed: bool,
    _work: WorkGuard,
}

impl RequestGuard {
    fn begin<T>(conn: &Arc<ConnShared>, request: &Request<T>) -> Self {
        // Listed on its connection, so a request still running at the drain deadline appears
        // in the lifecycle's stuck-work report (`Outcome::stuck_work`) as
        // `http GET /path from 127.0.0.1:53412`: the server is the lifecycle's `WorkSource`.
        let work = conn.server.handle().work_guard();
        let http2 = request.version() == http::Version::HTTP_2;
        let key = conn.begin(request.method().clone(), request.uri(), http2);
        RequestGuard {
            conn: Arc::clone(conn),
            key,
            completed: false,
            _work: work,
        }
    }

    /// Marks the request completed; the count is made when the guard drops.
    pub(crate) fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn.finish(self.key, self.completed);
    }
}

/// The hyper service of one connection.
#[derive(Clone)]
pub(crate) struct RequestService<S> {
    pub(crate) inner: S,
    pub(crate) conn: Arc<ConnShared>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for RequestService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, B>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::begin(&self.conn, &request);
        let server = &self.conn.server;
        let http1 = request.version() < Version::HTTP_2;
        let head = request.method() == http::Method::HEAD;
        if server
            .readiness_route
            .as_deref()
            .is_some_and(|route| request.uri().path() == route)
        {
            return ResponseFuture {
                call: None,
                ready: Some(server.handle().is_ready()),
                guard: Some(guard),
                http1,
                head,
                body: PhantomData,
            };
        }
        request
            .extensions_mut()
            .insert(Draining::new(Arc::clone(&self.conn)));
        ResponseFuture {
            call: Some(self.inner.clone().oneshot(request)),
            ready: None,
            guard: Some(guard),
            http1,
            head,
            body: PhantomData,
        }
    }
}

/// `200 ready` while the lifecycle is ready, `503 stopping` otherwise (during startup too).
fn readiness(ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pin_project_lite::pin_project! {
    /// The response future of one request; dropping it (the connection was cut or the client
    /// went away) ends the request as aborted or cut.
    pub(crate) struct ResponseFuture<S: tower::Service<Request<Incoming>>, B> {
        #[pin]
        call: Option<Oneshot<S, Request<Incoming>>>,
        // The readiness route's answer, built when polled: a response here would make every
        // request's future (moved several times by hyper) a hundred bytes larger.
        ready: Option<bool>,
        guard: Option<RequestGuard>,
        http1: bool,
        // hyper never polls the body of a response to HEAD.
        head: bool,
        body: PhantomData<fn() -> B>,
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.ready.take() {
            Some(ready) => readiness(ready).map(Either::Right),
            None => {
                let call = this
                    .call
                    .as_pin_mut()
                    .expect("a ResponseFuture polled after it completed");
                let Ok(response) = ready!(call.poll(cx));
                response.map(Either::Left)
            }
        };
        let guard = this
            .guard
            .take()
            .expect("a ResponseFuture polled after it completed");
        Poll::Ready(Ok(finish(guard, *this.http1, *this.head, response)))
    }
}

/// Hands the guard to the body (or, for a protocol switch, to the upgraded stream).
fn finish<B>(
    guard: RequestGuard,
    http1: bool,
    head: bool,
    mut response: Response<Either<B, Full<Bytes>>>,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let conn = Arc::clone(&guard.conn);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The request lives on as the upgraded stream (a WebSocket): in flight until the
        // stream is dropped, completed then unless a cut counted it first.
        let mut guard = guard;
        guard.completed = true;
        *conn.upgrade_guard.lock() = Some(guard);
        // Release: the I/O wrapper (Acquire) then watches the cut itself.
        conn.upgraded.store(true, Ordering::Release);
        return response.map(|body| ResponseBody::new(body, None));
    }
    if http1 && conn.server.is_halted() {
        // Intake stopped while this request ran: tell the client not to reuse the connection
        // (hyper also closes it after this response, as its keep-alive is off by now).
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if head {
        // Only the head is sent: the request completes with it.
        guard.complete();
        return response.map(|body| ResponseBody::new(body, None));
    }
    response.map(|body| ResponseBody::new(body, Some(guard)))
}
