//! DNS over HTTPS upstreams (RFC 8484) on HTTP/2: one thread running a tokio current-thread runtime with the
//! `h2` crate over tokio-rustls, shared by every worker.
//!
//! Why `h2` on tokio and not hyper, and why not inside the workers: HTTP/2 needs its own connection task (SETTINGS,
//! PING, flow control, stream resets) that `h2` provides as a future; hyper would add a client pool and body
//! types we do not use. The workers' loops are synchronous epoll loops, so the sessions run on one runtime thread
//! and talk to the workers through channels: a worker sends framed messages (exactly what it would write on a
//! TCP connection) and gets framed answers back, woken by an eventfd in its epoll set. To the core a DoH
//! upstream is one more pipelined connection: IDs, retries and "a broken session fails or retries exactly its
//! own queries" are the core's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::core::ConnId;

/// Requests waiting per session before new ones are refused (the core retries them elsewhere or times out).
const SESSION_QUEUE: usize = 4_096;
/// Commands from all workers waiting for the runtime thread.
const COMMAND_QUEUE: usize = 65_536;
/// The largest DoH answer read (a DNS message is at most 65,535 bytes).
const MAX_BODY: usize = 65_535;

/// A worker's request to the DoH thread.
pub(crate) enum Command {
    Connect { worker: usize, conn: ConnId, remote: SocketAddr, server_name: Arc<str>, path: Arc<str> },
    Send { worker: usize, conn: ConnId, framed: Vec<u8> },
    Close { worker: usize, conn: ConnId },
}

/// What the DoH thread reports to a worker.
#[derive(Debug)]
pub(crate) enum Event {
    Connected(ConnId),
    /// Framed answers (two-byte length, message with the ID the core sent).
    Received(ConnId, Vec<u8>),
    Closed(ConnId),
}

/// A worker's end: an eventfd that turns readable when events are queued.
pub(crate) struct Inbox {
    pub events: std_mpsc::Receiver<Event>,
    pub wake: Arc<EventFd>,
}

/// An eventfd (non-blocking).
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> std::io::Result<Self> {
        super::sys::eventfd().map(Self)
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn signal(&self) {
        super::sys::eventfd_write(self.0.as_raw_fd());
    }

    pub fn drain(&self) {
        super::sys::eventfd_read(self.0.as_raw_fd());
    }
}

struct Outbox {
    events: std_mpsc::Sender<Event>,
    wake: Arc<EventFd>,
}

impl Outbox {
    fn send(&self, event: Event) {
        if self.events.send(event).is_ok() {
            self.wake.signal();
        }
    }
}

/// Starts the DoH thread for `workers` workers; returns the command sender and one inbox per worker.
pub(crate) fn start(
    workers: usize,
    tls: Arc<rustls::ClientConfig>,
    mark: u32,
) -> std::io::Result<(mpsc::Sender<Command>, Vec<Inbox>, std::thread::JoinHandle<()>)> {
    let (commands, mut receiver) = mpsc::channel::<Command>(COMMAND_QUEUE);
    let mut inboxes = Vec::new();
    let mut outboxes = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = std_mpsc::channel();
        let wake = Arc::new(EventFd::new()?);
        inboxes.push(Inbox { events: rx, wake: wake.clone() });
        outboxes.push(Arc::new(Outbox { events: tx, wake }));
    }
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("dns-doh".into()).spawn(move || {
        runtime.block_on(async move {
            let mut sessions: HashMap<(usize, ConnId), mpsc::Sender<Vec<u8>>> = HashMap::new();
            while let Some(command) = receiver.recv().await {
                match command {
                    Command::Connect { worker, conn, remote, server_name, path } => {
                        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                        sessions.insert((worker, conn), tx);
                        let outbox = outboxes[worker].clone();
                        let connector = connector.clone();
                        tokio::spawn(async move {
                            let result = session(connector, remote, mark, &server_name, &path, conn, rx, &outbox).await;
                            let _ = result;
                            outbox.send(Event::Closed(conn));
                        });
                    }
                    Command::Send { worker, conn, framed } => {
                        let delivered = sessions.get(&(worker, conn)).is_some_and(|tx| tx.try_send(framed).is_ok());
                        if !delivered {
                            sessions.remove(&(worker, conn));
                        }
                    }
                    Command::Close { worker, conn } => {
                        sessions.remove(&(worker, conn));
                    }
                }
            }
        });
    })?;
    Ok((commands, inboxes, thread))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 session: connect (with SO_MARK `mark` unless 0, so the gateway never steers it), TLS with ALPN
/// h2, then one POST per DNS message until the worker closes it or the session breaks.
#[allow(clippy::too_many_arguments)]
async fn session(
    connector: tokio_rustls::TlsConnector,
    remote: SocketAddr,
    mark: u32,
    server_name: &str,
    path: &str,
    conn: ConnId,
    mut messages: mpsc::Receiver<Vec<u8>>,
    outbox: &Arc<Outbox>,
) -> Result<(), BoxError> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(remote), socket2::Type::STREAM, None)?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    socket.set_nonblocking(true)?;
    let tcp = tokio::net::TcpSocket::from_std_stream(socket.into()).connect(remote).await?;
    tcp.set_nodelay(true)?;
    let name =
        rustls::pki_types::ServerName::try_from(server_name.trim_start_matches('[').trim_end_matches(']'))?.to_owned();
    let tls = connector.connect(name, tcp).await?;
    let (client, connection) = h2::client::handshake(tls).await?;
    let driver = tokio::spawn(connection);
    outbox.send(Event::Connected(conn));
    let authority =
        if remote.port() == 443 { server_name.to_owned() } else { format!("{server_name}:{}", remote.port()) };
    let uri: http::Uri = format!("https://{authority}{path}").parse()?;
    while let Some(framed) = messages.recv().await {
        let mut at = 0;
        while framed.len() >= at + 2 {
            let len = usize::from(u16::from_be_bytes([framed[at], framed[at + 1]]));
            let Some(message) = framed.get(at + 2..at + 2 + len) else { break };
            at += 2 + len;
            let mut client = client.clone().ready().await?;
            let id = [message[0], message[1]];
            let mut body = message.to_vec();
            // RFC 8484 section 4.1: ID 0 keeps requests cacheable; the ID is restored from `id` below.
            body[..2].copy_from_slice(&[0, 0]);
            let request = http::Request::post(uri.clone())
                .header("content-type", "application/dns-message")
                .header("accept", "application/dns-message")
                .body(())?;
            let (response, mut stream) = client.send_request(request, false)?;
            stream.send_data(Bytes::from(body), true)?;
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let Ok(response) = response.await else { return };
                if response.status() != http::StatusCode::OK {
                    return;
                }
                let mut body = response.into_body();
                let mut answer = Vec::new();
                while let Some(chunk) = body.data().await {
                    let Ok(chunk) = chunk else { return };
                    let _ = body.flow_control().release_capacity(chunk.len());
                    answer.extend_from_slice(&chunk);
                    if answer.len() > MAX_BODY {
                        return;
                    }
                }
                if answer.len() < crate::wire::HEADER_LEN {
                    return;
                }
                answer[..2].copy_from_slice(&id);
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                outbox.send(Event::Received(conn, framed));
            });
        }
    }
    driver.abort();
    Ok(())
}
