//! The driver: rendezvous as initiator, run the sweep, leave cleanly.

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorContext, Context, Handler, Message, ResponseActFuture, WrapFuture};
use slimebench_proto::rendezvous::{Rendezvous, Role};
use slimebench_proto::Transport;
use tokio::time::Instant;

use super::{Abort, AgentSetup, NodeError, Shutdown, TransportFactory};
use crate::bench::plan::SweepPlan;
use crate::bench::progress::Progress;
use crate::bench::stats::SizeStats;
use crate::bench::sweep::run_sweep;
use crate::control::{Agent, ControlStore};
use crate::rpc::client::ClientStats;
use crate::rpc::{Alarm, RpcClient, Trip};

/// What a finished sweep reports.
#[derive(Debug, Clone)]
pub struct DriverReport {
    pub stats: Vec<SizeStats>,
    pub peer: String,
    /// From agent start to a connected link.
    pub rendezvous: Duration,
    /// When the link came up (tokio's clock: simulated under the simulator).
    pub connected_at: Instant,
    pub client: ClientStats,
    /// Whether our keys were removed and the peer notified.
    pub clean_exit: bool,
}

/// Run one sweep against `peer`.
#[derive(Message)]
#[rtype(result = "Result<DriverReport, NodeError>")]
pub struct RunSweep {
    pub peer: String,
    pub plan: SweepPlan,
    pub progress: Progress,
    pub options: crate::bench::sweep::SweepOptions,
}

/// Runs sweeps; one per actor (the setup is consumed).
pub struct DriverActor<T, S> {
    setup: Option<Box<(AgentSetup<S>, TransportFactory<T>)>>,
    alarm: Rc<Alarm>,
}

impl<T: Transport + 'static, S: ControlStore + 'static> DriverActor<T, S> {
    pub fn new(setup: AgentSetup<S>, factory: TransportFactory<T>) -> Self {
        DriverActor {
            setup: Some(Box::new((setup, factory))),
            alarm: Rc::new(Alarm::new()),
        }
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Actor for DriverActor<T, S> {
    type Context = Context<Self>;
}

impl<T: Transport + 'static, S: ControlStore + 'static> Handler<RunSweep> for DriverActor<T, S> {
    // Runs inside the actor's context, so stopping the actor (Abort) drops it.
    type Result = ResponseActFuture<Self, Result<DriverReport, NodeError>>;

    fn handle(&mut self, msg: RunSweep, _: &mut Context<Self>) -> Self::Result {
        let setup = self.setup.take();
        let alarm = self.alarm.clone();
        Box::pin(
            async move {
                let (setup, factory) = *setup.ok_or(NodeError::Interrupted("driver already ran its sweep".into()))?;
                drive_sweep(setup, factory, msg, alarm).await
            }
            .into_actor(self),
        )
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Handler<Shutdown> for DriverActor<T, S> {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.alarm.trip(Trip::Shutdown);
    }
}

impl<T: Transport + 'static, S: ControlStore + 'static> Handler<Abort> for DriverActor<T, S> {
    type Result = ();
    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Run `fut` unless the alarm trips first.
pub(crate) async fn unless_tripped<R>(alarm: &Alarm, fut: impl Future<Output = R>) -> Result<R, Trip> {
    let mut fut = pin!(fut);
    let mut trip = pin!(alarm.tripped_wait());
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(r));
        }
        trip.as_mut().poll(cx).map(Err)
    })
    .await
}

/// The driver's node body: transport, rendezvous, sweep while watching the
/// peer, clean exit. The agent always closes, whatever failed.
///
/// # Errors
/// [`NodeError`] naming the step that failed.
pub async fn drive_sweep<T: Transport, S: ControlStore>(
    setup: AgentSetup<S>,
    factory: TransportFactory<T>,
    run: RunSweep,
    alarm: Rc<Alarm>,
) -> Result<DriverReport, NodeError> {
    let started = Instant::now();
    let transport = factory()?;
    let mut client = RpcClient::new(transport, setup.geometry, alarm.clone(), setup.spin)?;
    client.set_call_timeout(setup.call_timeout);
    let local = setup.local(client.transport(), client.mailbox_desc());
    let machine = Rendezvous::new(
        setup.keys.clone(),
        local,
        Role::Initiator { peer: run.peer.clone() },
        setup.timing.clone(),
    );
    let mut agent = Agent::new(setup.store, machine, setup.timing.op_timeout, setup.poll_period);
    if let Some(n) = setup.max_steps {
        agent = agent.with_max_steps(n);
    }
    let result = async {
        let peer = match unless_tripped(&alarm, agent.rendezvous(client.transport_mut())).await {
            Ok(r) => r?,
            Err(trip) => return Err(NodeError::Interrupted(format!("{trip:?} during rendezvous"))),
        };
        let rendezvous = started.elapsed();
        tracing::info!(peer = peer.alias(), ?rendezvous, "connected");
        client.attach(peer.mailbox);
        let stats = {
            let sweep = pin!(run_sweep(&mut client, &run.plan, &run.progress, run.options));
            let watch = pin!(agent.watch(&alarm));
            sweep_while_watching(sweep, watch, peer.alias()).await
        };
        Ok((stats?, rendezvous, started + rendezvous, peer.alias().to_string()))
    }
    .await;
    client.shutdown();
    let clean_exit = agent.close().await;
    let (stats, rendezvous, connected_at, peer) = result?;
    Ok(DriverReport {
        stats,
        peer,
        rendezvous,
        connected_at,
        client: client.stats().clone(),
        clean_exit,
    })
}

/// Poll the sweep and the peer watch together; the sweep decides the result
/// (a peer going down trips the alarm, which makes the sweep fail promptly).
async fn sweep_while_watching<R, W>(
    mut sweep: std::pin::Pin<&mut impl Future<Output = Result<R, crate::bench::sweep::SweepError>>>,
    mut watch: std::pin::Pin<&mut impl Future<Output = W>>,
    peer: &str,
) -> Result<R, NodeError> {
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = sweep.as_mut().poll(cx) {
            return std::task::Poll::Ready(r.map_err(|e| match e.rpc() {
                // The session is over: say which peer it was with.
                Some(rpc) if rpc.is_fatal() => NodeError::Peer {
                    peer: peer.to_string(),
                    error: rpc.clone(),
                },
                _ => NodeError::Sweep(e),
            }));
        }
        if watching && watch.as_mut().poll(cx).is_ready() {
            watching = false;
            // The alarm is tripped now; the sweep notices on its next poll.
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    })
    .await
}
