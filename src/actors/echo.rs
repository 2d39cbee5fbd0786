//! The in-process actix echo baseline: the Rust analogue of a local actor
//! call, `addr.send(Echo(bytes)).await`, with the actor on its own arbiter
//! thread (as an actor runtime runs actors on its own executor). The payload
//! is moved into the message and moved back: no serialisation, no wire —
//! a lower bound for what any actor runtime can do for this echo.

use actix::{Actor, Context, Handler, Message};

/// Echo these bytes back.
#[derive(Message)]
#[rtype(result = "Vec<u8>")]
pub struct Echo(pub Vec<u8>);

/// Replies with the bytes it was sent.
#[derive(Default)]
pub struct EchoActor;

impl Actor for EchoActor {
    type Context = Context<Self>;
}

impl Handler<Echo> for EchoActor {
    type Result = Vec<u8>;
    fn handle(&mut self, msg: Echo, _: &mut Context<Self>) -> Vec<u8> {
        msg.0
    }
}
