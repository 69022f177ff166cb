//! [`StoreFuture`]: what every [`SessionStore`](super::SessionStore) method
//! returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::StoreError;

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The answer of a [`SessionStore`](super::SessionStore) operation: either
/// already there, or still to come.
///
/// An in-process store answers at once with [`StoreFuture::ready`]: the
/// layer sees that the answer is there and carries on in place, without
/// polling, boxing or allocating anything for it. A store that waits on a
/// network answers with [`StoreFuture::new`] and an `async move` block that
/// owns what it needs (clone the client into it); the layer keeps that
/// future in the request's response future and polls it like any other.
///
/// There is nothing to promise and so nothing to get wrong: a ready answer
/// is ready by construction, and any other is awaited.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::StoreFuture;
/// use tower_session_storage::StoreError;
///
/// # async fn query_the_database(_: u64) -> Result<bool, StoreError> { Ok(true) }
/// // In-process: the answer is already there.
/// let now: StoreFuture<bool> = StoreFuture::ready(Ok(true));
/// // Over the network: an owned future.
/// let key = 7;
/// let later: StoreFuture<bool> = StoreFuture::new(async move { query_the_database(key).await });
/// # let _ = (now, later);
/// ```
#[must_use = "a StoreFuture does nothing unless awaited"]
pub struct StoreFuture<T> {
    state: State<T>,
}

enum State<T> {
    Ready(Option<Result<T, StoreError>>),
    Waiting(Boxed<T>),
}

impl<T> StoreFuture<T> {
    /// An answer that is already there: no allocation, and the layer uses
    /// it in place.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }

    /// An answer still to come: `fut` is boxed and polled by the layer.
    pub fn new<F>(fut: F) -> Self
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        Self {
            state: State::Waiting(Box::pin(fut)),
        }
    }

    /// The answer if it is already there (a [`ready`](Self::ready) one),
    /// without polling; otherwise the future itself, back.
    ///
    /// For stores that wrap another store: act on an in-process store's
    /// answer at once, and keep the answer ready.
    pub fn into_ready(self) -> Result<Result<T, StoreError>, Self> {
        match self.state {
            State::Ready(Some(result)) => Ok(result),
            state => Err(Self { state }),
        }
    }

    /// `f` applied to the answer: at once if the answer is already there
    /// (what `f` returns is then the answer, ready if `f` made it ready),
    /// otherwise in an owned future that awaits this one first.
    ///
    /// ```
    /// use tower_session_storage::store::StoreFuture;
    ///
    /// let doubled = StoreFuture::ready(Ok(21)).then(|r| StoreFuture::ready(r.map(|n| n * 2)));
    /// assert_eq!(doubled.into_ready().ok().and_then(Result::ok), Some(42));
    /// ```
    pub fn then<U, F>(self, f: F) -> StoreFuture<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(Result<T, StoreError>) -> StoreFuture<U> + Send + 'static,
    {
        match self.into_ready() {
            Ok(result) => f(result),
            Err(fut) => StoreFuture::new(async move { f(fut.await).await }),
        }
    }

    /// `f` applied to the answer, keeping a ready answer ready.
    pub fn map<U, F>(self, f: F) -> StoreFuture<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(Result<T, StoreError>) -> Result<U, StoreError> + Send + 'static,
    {
        self.then(|result| StoreFuture::ready(f(result)))
    }

    /// The answer: polled with `cx`; without a context, taken only if it is
    /// already there (never polled), which is what lets the layer run an
    /// in-process store in place.
    pub(crate) fn answer(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Result<T, StoreError>> {
        match cx {
            Some(cx) => Pin::new(self).poll(cx),
            None => self.take_ready(),
        }
    }

    /// Takes the answer if it is already there, without polling.
    fn take_ready(&mut self) -> Poll<Result<T, StoreError>> {
        match &mut self.state {
            State::Ready(result) => match result.take() {
                Some(result) => Poll::Ready(result),
                None => Poll::Ready(Err(StoreError::other(POLLED_AFTER_COMPLETION))),
            },
            State::Waiting(_) => Poll::Pending,
        }
    }
}

impl<T> From<Result<T, StoreError>> for StoreFuture<T> {
    fn from(result: Result<T, StoreError>) -> Self {
        Self::ready(result)
    }
}

// Nothing in a `StoreFuture` is pinned structurally: the boxed future is
// pinned in its box, and a ready answer is only ever moved out.
impl<T> Unpin for StoreFuture<T> {}

impl<T> Future for StoreFuture<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Ready(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err(StoreError::other(POLLED_AFTER_COMPLETION))),
            ),
            State::Waiting(fut) => fut.as_mut().poll(cx),
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "a StoreFuture was polled after it completed";

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "taken",
            State::Waiting(_) => "waiting",
        };
        f.debug_tuple("StoreFuture").field(&state).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_ready_answer_is_taken_without_polling() {
        let mut fut = StoreFuture::ready(Ok(5));
        assert!(matches!(fut.take_ready(), Poll::Ready(Ok(5))));
    }

    #[tokio::test]
    async fn a_waiting_answer_is_handed_back_and_then_awaited() {
        let fut = StoreFuture::new(async {
            tokio::task::yield_now().await;
            Ok(6)
        });
        let mut fut = fut;
        assert!(fut.take_ready().is_pending(), "not there yet: handed back");
        assert_eq!(fut.await.unwrap(), 6);
    }
}
