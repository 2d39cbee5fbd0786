//! slimebench TCP backend: RDMA write-with-immediate emulated with validated
//! frames over TCP (or any byte stream).
//!
//! - [`frame`]: the frame codec and its validation against registered regions (pure);
//! - [`stream`]: where streams come from ([`StreamFactory`], real TCP in [`TokioTcp`]);
//! - [`transport`]: [`FramedTransport`], the [`slimebench_proto::Transport`] implementation.

pub mod frame;
pub mod stream;
pub mod transport;

pub use stream::{AsyncStream, ByteStream, StreamFactory, TcpFd, TokioTcp};
pub use transport::{FramedTransport, TcpConfig, TcpStats, TcpTransport};
