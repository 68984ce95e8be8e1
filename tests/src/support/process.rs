//! Spawned processes are owned by a guard that kills them (by pid) on drop,
//! so a failing test leaves nothing running.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Kills its child on drop: SIGTERM, then SIGKILL if it lingers.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> std::io::Result<ChildGuard> {
        let child = command.stdin(Stdio::null()).spawn()?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child itself, e.g. to take its piped stdout.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a signal (e.g. `"TERM"`, `"KILL"`) without waiting.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        self.signal_pid(child.id(), "TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has exited, and how.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn signal_pid(&self, pid: u32, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs `command` to its end under a [`ChildGuard`] and returns its output,
/// or panics (the guard killing the process) if it is still running after
/// `timeout`: a command that should exit at once but serves instead fails
/// the test rather than hanging it.
pub fn run_with_deadline(
    name: &str,
    command: &mut Command,
    timeout: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    let mut guard = ChildGuard::spawn(name, command.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let child = guard.child_mut().expect("child");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Read both pipes while waiting, so a chatty child cannot block on a
    // full pipe.
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.try_wait() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            guard.kill();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{name} still ran after {timeout:?} (killed); stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A loopback port that refuses connections and that nobody else can take
/// while this is alive: a socket bound to it that never listens. For nodes
/// that must be dead for the whole test (a [`free_port`] may be bound by
/// another test meanwhile).
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        // Bound, never listening, never connected: it holds the port (no
        // SO_REUSEADDR) and a connect to it is answered with a reset. No
        // runtime is involved until a socket listens or connects.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("bind a refusing port");
        let port = socket.local_addr().expect("local addr").port();
        RefusingPort {
            _socket: socket,
            port,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        RefusingPort::new()
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; racy but fine on a
/// test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Path of a binary built in this workspace's target dir (`kylin-gateway`,
/// `kylin-sim`). `cargo test` builds the test package's own bins; the
/// README's test command builds the rest first.
pub fn target_bin(name: &str) -> PathBuf {
    let env_key = format!("KGW_BIN_{}", name.replace('-', "_").to_uppercase());
    if let Some(path) = std::env::var_os(env_key) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_port_refuses_and_cannot_be_taken() {
        let port = RefusingPort::new();
        let refused = std::net::TcpStream::connect(port.addr()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // Not by a plain listener, nor by one with SO_REUSEADDR (tokio's).
        assert!(TcpListener::bind(port.addr()).is_err());
        let reuse = tokio::net::TcpSocket::new_v4().unwrap();
        reuse.set_reuseaddr(true).unwrap();
        assert!(reuse.bind(port.addr()).is_err());
    }
}
