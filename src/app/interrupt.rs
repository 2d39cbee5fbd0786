//! What ends a run early. The CLI passes [`Interrupt::signals`] (Ctrl-C or
//! SIGTERM); a test or an embedding program passes its own. Commands create
//! the future inside the runtime that awaits it (signal handlers need one),
//! so what is passed in is a maker of futures, not a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type MakeFuture = dyn Fn() -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync;

/// A source of "stop now" futures; each resolves when the run should end.
#[derive(Clone)]
pub struct Interrupt(Arc<MakeFuture>);

impl Interrupt {
    /// Ctrl-C or SIGTERM.
    pub fn signals() -> Self {
        Interrupt(Arc::new(|| Box::pin(signalled())))
    }

    /// Never: the run ends on its own.
    pub fn never() -> Self {
        Interrupt(Arc::new(|| Box::pin(std::future::pending())))
    }

    /// Any future maker (e.g. a test's timer or channel).
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Interrupt(Arc::new(move || Box::pin(f())))
    }

    /// A future that resolves on interruption (create it inside the runtime
    /// that awaits it).
    pub fn wait(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        (self.0)()
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interrupt")
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
