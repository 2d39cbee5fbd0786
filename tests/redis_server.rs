//! A private `redis-server` for tests: a free port on 127.0.0.1, no
//! persistence, killed and reaped on drop.
//!
//! When `redis-server` is not installed the tests that need it skip out loud
//! (a line on stderr), unless `SLIMEBENCH_REQUIRE_REDIS=1` makes that a failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// Attempts at a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: usize = 3;

/// A running `redis-server` child process.
pub struct RedisServer {
    bin: PathBuf,
    port: u16,
    password: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl RedisServer {
    /// Start a server without a password; `None` (after saying so) when
    /// `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        Self::launch(None)
    }

    /// Start a server that requires `pw` (`--requirepass`).
    pub fn start_with_password(pw: &str) -> Option<RedisServer> {
        Self::launch(Some(pw.to_string()))
    }

    /// `redis://[:password@]127.0.0.1:port/`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (it stays down until [`RedisServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the server (if running) and start it again on the same port,
    /// empty (nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("redis-server did not come back on port {}: {e}", self.port);
        }
    }

    fn launch(password: Option<String>) -> Option<RedisServer> {
        let Some(bin) = find_redis_server() else {
            if std::env::var("SLIMEBENCH_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!(
                    "SLIMEBENCH_REQUIRE_REDIS=1 but redis-server is not on PATH \
                     (apt-get install redis-server)"
                );
            }
            // Straight to the stderr handle: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let line = format!("skipping: redis-server not installed (apt-get install redis-server) [{test}]\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            return None;
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut server = RedisServer {
                bin: bin.clone(),
                port,
                password: password.clone(),
                child: None,
                log: std::env::temp_dir().join(format!("slimebench-redis-{}-{port}.log", std::process::id())),
            };
            match server.spawn_and_wait() {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts: {last}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir());
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < READY_LIMIT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server exited with {status}: {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    ));
                }
            }
            if answers_ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!(
            "redis-server on port {} did not answer within {READY_LIMIT:?}: {}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `redis-server` on PATH; `/usr/bin/redis-server` only when PATH is unset
/// (so a PATH that hides it makes the tests skip).
fn find_redis_server() -> Option<PathBuf> {
    match std::env::var_os("PATH") {
        Some(path) => std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file()),
        None => Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Whether something on `port` answers a RESP PING (`+PONG`, or `-NOAUTH`
/// when a password is required: up either way).
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}
