//! A loopback TCP relay to put between a client and a server (the gateway
//! and ZooKeeper) to simulate network partitions: it accepts on
//! `127.0.0.1:0` and forwards every connection to the target. [`Relay::pause`]
//! stops forwarding both ways without closing anything (the peers see a
//! silent link: bytes already sent wait, as TCP would retransmit them, and
//! arrive after [`Relay::resume`]); [`Relay::cut`] closes every connection
//! (new ones are still accepted). It runs on its own thread and runtime so a
//! test that blocks its own runtime cannot stall it; dropping it stops it and
//! closes everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The link's state as the pumps see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    paused: bool,
    /// Bumped by every cut; a connection opened before closes.
    cuts: u64,
    shutdown: bool,
}

/// A running relay; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:<port>` (see [`Relay::port`]) to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking relay");
        let addr = listener.local_addr().expect("relay address");
        let (link, link_rx) = watch::channel(Link {
            paused: false,
            cuts: 0,
            shutdown: false,
        });
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("relay runtime");
                runtime.block_on(accept_loop(listener, target, link_rx, counter));
            })
            .expect("spawn relay thread");
        Relay {
            addr,
            link,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`, for a client's connect string.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops forwarding both ways; connections stay open.
    pub fn pause(&self) {
        self.link.send_modify(|l| l.paused = true);
    }

    /// Forwards again, held bytes first.
    pub fn resume(&self) {
        self.link.send_modify(|l| l.paused = false);
    }

    /// Closes every open connection (new ones are accepted).
    pub fn cut(&self) {
        self.link.send_modify(|l| l.cuts += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.link.send_modify(|l| l.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    target: SocketAddr,
    mut link: watch::Receiver<Link>,
    accepted: Arc<AtomicU64>,
) {
    let listener = TcpListener::from_std(listener).expect("relay listener");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            result = listener.accept() => {
                let Ok((client, _)) = result else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                connections.spawn(relay_connection(client, target, link.clone()));
            }
            changed = link.changed() => {
                if changed.is_err() || link.borrow().shutdown {
                    break;
                }
            }
        }
    }
    connections.shutdown().await;
}

/// Forwards one connection until either side closes, it is cut, or the
/// relay shuts down.
async fn relay_connection(client: TcpStream, target: SocketAddr, link: watch::Receiver<Link>) {
    let cuts = link.borrow().cuts;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut closed = link.clone();
    tokio::select! {
        () = pump(client_read, server_write, link.clone()) => {}
        () = pump(server_read, client_write, link) => {}
        () = async {
            while closed.changed().await.is_ok() {
                let l = *closed.borrow();
                if l.cuts != cuts || l.shutdown {
                    return;
                }
            }
        } => {}
    }
}

/// Copies one direction, holding still while paused (nothing is read, so
/// the sender's bytes wait in its socket buffer).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_unpaused(&mut link).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Paused while this read was pending: hold the bytes until resumed.
        if wait_unpaused(&mut link).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_unpaused(link: &mut watch::Receiver<Link>) -> Result<(), watch::error::RecvError> {
    link.wait_for(|l| !l.paused).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::Relay;

    /// An echo server on a free port, one thread per connection.
    fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        let _ = stream.write_all(&buf[..n]);
                    }
                });
            }
        });
        addr
    }

    fn read_some(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(buf[..n].to_vec())
    }

    #[test]
    fn pause_holds_bytes_resume_delivers_them_cut_closes() {
        let relay = Relay::start(echo_server());
        let mut stream = TcpStream::connect(relay.connect_string()).unwrap();
        stream.write_all(b"a").unwrap();
        assert_eq!(
            read_some(&mut stream, Duration::from_secs(5)).unwrap(),
            b"a"
        );

        relay.pause();
        stream.write_all(b"b").unwrap();
        let silent = read_some(&mut stream, Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(silent.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "nothing passes while paused: {silent}"
        );
        relay.resume();
        assert_eq!(
            read_some(&mut stream, Duration::from_secs(5)).unwrap(),
            b"b"
        );

        relay.cut();
        let closed = read_some(&mut stream, Duration::from_secs(2));
        let timed_out =
            |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
        assert!(
            match &closed {
                Ok(bytes) => bytes.is_empty(),
                Err(e) => !timed_out(e),
            },
            "cut closes the connection: {closed:?}"
        );
        let mut again = TcpStream::connect(relay.connect_string()).unwrap();
        again.write_all(b"c").unwrap();
        assert_eq!(read_some(&mut again, Duration::from_secs(5)).unwrap(), b"c");
        assert_eq!(relay.accepted(), 2);
    }
}
