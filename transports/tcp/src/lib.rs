//! slimebench TCP backend: RDMA write-with-immediate emulated with validated
//! frames over TCP (or any byte stream).
//!
//! The frame codec and its validation live in `slimebench_proto::frame` (pure, fuzzed).
//! - [`stream`]: where streams come from ([`StreamFactory`], real TCP in [`TokioTcp`]);
//! - [`transport`]: [`FramedTransport`], the [`slimebench_proto::Transport`] implementation.

pub mod stream;
pub mod transport;

pub use stream::{AsyncStream, ByteStream, StreamFactory, TcpFd, TokioTcp};
pub use transport::{FramedTransport, TcpConfig, TcpStats, TcpTransport};
