//! The worker: rendezvous as responder, serve echoes until the driver
//! leaves, leave cleanly.

use std::pin::pin;
use std::rc::Rc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use slimebench_proto::rendezvous::{Rendezvous, Role};
use slimebench_proto::Transport;
use tokio::sync::oneshot;

use super::driver::unless_tripped;
use super::{Abort, AgentSetup, NodeError, Shutdown, TransportFactory};
use crate::control::{Agent, ControlStore};
use crate::rpc::server::ServerStats;
use crate::rpc::{Alarm, Echo, RpcServer, ServeEnd, Trip};

/// How a worker finished.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub peer: String,
    pub end: ServeEnd,
    pub server: ServerStats,
    pub clean_exit: bool,
}

/// Serves one driver, then stops; the outcome goes to `done`.
pub struct WorkerActor<T, S> {
    setup: Option<Box<(AgentSetup<S>, TransportFactory<T>)>>,
    done: Option<oneshot::Sender<Result<WorkerReport, NodeError>>>,
    alarm: Rc<Alarm>,
}

impl<T: Transport + 'static, S: ControlStore + 'static> WorkerActor<T, S> {
    pub fn new(
        setup: AgentSetup<S>,
        factory: TransportFactory<T>,
        done: oneshot::Sender<Result<WorkerReport, NodeError>>,
    ) -> Self {
        WorkerActor {
            setup: Some(Box::new((setup, factory))),
            done: Some(done),
            alarm: Rc::new(Alarm::new()),
        }
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Actor for WorkerActor<T, S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (setup, factory) = *self.setup.take().expect("started once");
        let alarm = self.alarm.clone();
        ctx.spawn(serve(setup, factory, alarm).into_actor(self).map(|res, act, ctx| {
            if let Some(done) = act.done.take() {
                // The receiver may be gone (the caller gave up); nothing to do then.
                let _ = done.send(res);
            }
            ctx.stop();
        }));
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Handler<Shutdown> for WorkerActor<T, S> {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.alarm.trip(Trip::Shutdown);
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Handler<Abort> for WorkerActor<T, S> {
    type Result = ();
    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        // The serve future is dropped with the actor's context; `done` is
        // dropped unsent, which its receiver sees as the actor being gone.
        self.done = None;
        ctx.stop();
    }
}

/// The worker's node body: transport, rendezvous, serve while watching the
/// peer, clean exit. The agent always closes, whatever failed.
///
/// # Errors
/// [`NodeError`] naming the step that failed.
pub async fn serve<T: Transport, S: ControlStore>(
    setup: AgentSetup<S>,
    factory: TransportFactory<T>,
    alarm: Rc<Alarm>,
) -> Result<WorkerReport, NodeError> {
    let transport = factory()?;
    let mut server = RpcServer::new(transport, setup.geometry, alarm.clone(), setup.spin)?;
    let local = setup.local(server.transport(), server.mailbox_desc());
    let machine = Rendezvous::new(setup.keys.clone(), local, Role::Responder, setup.timing.clone());
    let mut agent = Agent::new(setup.store, machine, setup.timing.op_timeout, setup.poll_period);
    if let Some(n) = setup.max_steps {
        agent = agent.with_max_steps(n);
    }
    let result = async {
        let peer = match unless_tripped(&alarm, agent.rendezvous(server.transport_mut())).await {
            Ok(r) => r?,
            Err(trip) => return Err(NodeError::Interrupted(format!("{trip:?} while waiting for a driver"))),
        };
        tracing::info!(peer = peer.alias(), "serving");
        server.attach(peer.mailbox);
        let mut echo = Echo;
        let end = {
            let serving = pin!(server.serve(&mut echo));
            let watch = pin!(agent.watch(&alarm));
            serve_while_watching(serving, watch).await
        };
        Ok((end?, peer.alias().to_string()))
    }
    .await;
    server.shutdown();
    let clean_exit = agent.close().await;
    let (end, peer) = result?;
    Ok(WorkerReport {
        peer,
        end,
        server: server.stats().clone(),
        clean_exit,
    })
}

async fn serve_while_watching<W>(
    mut serving: std::pin::Pin<&mut impl std::future::Future<Output = Result<ServeEnd, crate::rpc::RpcError>>>,
    mut watch: std::pin::Pin<&mut impl std::future::Future<Output = W>>,
) -> Result<ServeEnd, NodeError> {
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = serving.as_mut().poll(cx) {
            return std::task::Poll::Ready(r.map_err(NodeError::Rpc));
        }
        if watching && watch.as_mut().poll(cx).is_ready() {
            watching = false;
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    })
    .await
}
