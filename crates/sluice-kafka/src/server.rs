//! The Kafka listener: accepts connections, reads frames, dispatches requests in
//! order and writes responses. A bad frame closes only its own connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;
use sluice_core::messaging::Messaging;
use sluice_core::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::fetch_response::{self, Chunk};
use crate::handlers;
use crate::versions::supported_range;
use crate::wire::{decode_request, frame_bounds, FRAME_BYTES_MAX};

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaServerConfig {
    /// Host clients are told to connect to (Metadata).
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: i32,
    /// Connections served at once; further ones wait in the accept queue.
    pub connections_max: usize,
    /// Largest request frame; a larger size prefix closes the connection.
    pub frame_bytes_max: usize,
    /// Bytes of large requests buffered at once across all connections; a
    /// connection waits (reads nothing more) until its request fits.
    pub request_bytes_in_flight_max: usize,
}

/// Requests up to this size are not counted against the in-flight budget; they
/// fit in a connection's initial buffer.
const FRAME_BYTES_UNCOUNTED: usize = 64 * 1024;
/// How long a connection may pause in the middle of a counted (large) request.
const LARGE_REQUEST_STALL: std::time::Duration = std::time::Duration::from_secs(60);

impl KafkaServerConfig {
    /// Defaults for a listener advertised as `host:port`.
    pub fn new(advertised_host: String, advertised_port: i32) -> Self {
        KafkaServerConfig {
            advertised_host,
            advertised_port,
            connections_max: 10_000,
            frame_bytes_max: FRAME_BYTES_MAX,
            request_bytes_in_flight_max: 512 * 1024 * 1024,
        }
    }
}

/// What every handler can see.
pub(crate) struct Ctx {
    pub broker: Broker,
    /// Message-queue services over the same broker (delayed records).
    pub messaging: Messaging,
    pub config: KafkaServerConfig,
    /// Permits are bytes of large requests being buffered.
    pub request_bytes: Arc<Semaphore>,
}

/// Serves Kafka clients on `listener` until `shutdown` resolves; then stops
/// accepting, lets each connection finish its current request, and returns.
pub async fn serve(
    listener: TcpListener,
    messaging: Messaging,
    config: KafkaServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    // A single request may be as large as the whole budget, never larger.
    let budget_bytes = config
        .request_bytes_in_flight_max
        .max(config.frame_bytes_max)
        .min(u32::MAX as usize);
    let ctx = Arc::new(Ctx {
        broker: messaging.broker().clone(),
        messaging,
        request_bytes: Arc::new(Semaphore::new(budget_bytes)),
        config,
    });
    let permits = Arc::new(Semaphore::new(ctx.config.connections_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve_connection(stream, peer, &ctx, stop).await {
                        tracing::debug!(%peer, error = %e, "kafka connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] crate::wire::WireError),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported api key {key} version {version}")]
    Unsupported { key: i16, version: i16 },
}

/// Responses a connection may have outstanding (requests handled, responses not yet
/// written, typically produces waiting for their fsync) before the broker stops
/// reading its further requests.
const PIPELINE_DEPTH: usize = 64;

/// Serves one connection. Requests are handled one after another, in order, by the
/// reading half; responses go out in the same order from the writing half. A
/// response that waits for the disk (a produce to an `always` topic) does not hold
/// up the requests behind it: they are appended meanwhile, so back-to-back produces
/// from one client share fsyncs instead of paying one each.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    ctx: &Ctx,
    stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let (replies, pending) = mpsc::channel(PIPELINE_DEPTH);
    // The writer finishes the replies already queued even when reading failed, so
    // a client still gets the answers to the requests before a bad frame.
    let (read, write) = tokio::join!(
        read_requests(reader, peer, ctx, stop, replies),
        write_replies(writer, pending)
    );
    read.and(write)
}

async fn read_requests(
    mut stream: OwnedReadHalf,
    peer: std::net::SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
    replies: mpsc::Sender<Reply>,
) -> Result<(), ConnError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut budget: Option<OwnedSemaphorePermit> = None;
    loop {
        while let Some((start, end)) = frame_bounds(&buf, ctx.config.frame_bytes_max)? {
            let frame = buf.split_to(end).freeze().slice(start..);
            let reply = handle_frame(ctx, peer, frame, &mut out).await?;
            if replies.send(reply).await.is_err() {
                // The writing half failed; it reports why.
                return Ok(());
            }
            budget = None;
            if buf.capacity() > 2 * FRAME_BYTES_UNCOUNTED && buf.len() <= FRAME_BYTES_UNCOUNTED {
                // Do not keep a large request's buffer after its permit is gone.
                let mut fresh = BytesMut::with_capacity(FRAME_BYTES_UNCOUNTED);
                fresh.extend_from_slice(&buf);
                buf = fresh;
            }
        }
        if buf.len() >= 4 {
            // frame_bounds accepted the size: 0..=frame_bytes_max.
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if budget.is_none() && size > FRAME_BYTES_UNCOUNTED {
                // Count a large request against the listener-wide budget before
                // buffering it, so many connections cannot exhaust memory at once.
                let wanted = ctx.request_bytes.clone().acquire_many_owned(size as u32);
                budget = tokio::select! {
                    p = wanted => Some(p.map_err(|_| ConnError::Malformed("listener closed".into()))?),
                    _ = stop.changed() => return Ok(()),
                };
            }
            buf.reserve((size + 4).saturating_sub(buf.len()));
        } else {
            buf.reserve(4096);
        }
        // A connection holding part of the shared budget must keep sending.
        let stalled = async {
            if budget.is_some() {
                tokio::time::sleep(LARGE_REQUEST_STALL).await
            } else {
                std::future::pending().await
            }
        };
        let n = tokio::select! {
            n = stream.read_buf(&mut buf) => n?,
            _ = stop.changed() => return Ok(()),
            _ = stalled => {
                return Err(ConnError::Malformed("large request stalled".into()));
            }
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Writes the replies in the order their requests arrived, waiting for each
/// deferred one in turn.
async fn write_replies(
    mut stream: OwnedWriteHalf,
    mut pending: mpsc::Receiver<Reply>,
) -> Result<(), ConnError> {
    while let Some(reply) = pending.recv().await {
        match reply {
            Reply::None => {}
            Reply::Bytes(bytes) => stream.write_all(&bytes).await?,
            Reply::Chunks(chunks) => write_chunks(&mut stream, chunks).await?,
            Reply::Later(response) => {
                if let Some(bytes) = response.await? {
                    stream.write_all(&bytes).await?;
                }
            }
        }
    }
    Ok(())
}

/// A response that is complete once some work (an fsync) finishes: its frame, or
/// `None` when the client wants no response.
type LaterReply = Pin<Box<dyn Future<Output = Result<Option<Bytes>, ConnError>> + Send>>;

/// What to send back for one request.
enum Reply {
    /// Nothing (Produce with acks=0).
    None,
    /// A whole response frame.
    Bytes(Bytes),
    /// A Fetch response: encoded bytes and file ranges, in order.
    Chunks(Vec<Chunk>),
    /// A response still waiting for the disk.
    Later(LaterReply),
}

/// Handles one request frame. `out` is scratch space for encoding responses.
async fn handle_frame(
    ctx: &Ctx,
    peer: std::net::SocketAddr,
    frame: Bytes,
    out: &mut BytesMut,
) -> Result<Reply, ConnError> {
    if frame.len() < 8 {
        return Err(ConnError::Malformed(format!(
            "{} byte request",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| ConnError::Unsupported { key, version })?;
    let Some((min, max)) = supported_range(api) else {
        return Err(ConnError::Unsupported { key, version });
    };
    if version < min || version > max {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer an unknown ApiVersions version with a v0 response
            // carrying the error and our ranges, so the client can retry lower.
            let response = ApiVersionsResponse::default()
                .with_error_code(ResponseError::UnsupportedVersion.code())
                .with_api_keys(handlers::api_versions::advertised());
            write_response(
                out,
                correlation_id,
                api,
                0,
                &ResponseKind::ApiVersions(response),
            )?;
            return Ok(Reply::Bytes(out.split().freeze()));
        }
        return Err(ConnError::Unsupported { key, version });
    }
    let (header, request) = decode_request(api, version, frame).map_err(ConnError::Malformed)?;
    if let RequestKind::Fetch(fetch) = request {
        let topics = handlers::fetch::handle(ctx, fetch).await;
        let (chunks, _) = fetch_response::encode(version, header.correlation_id, &topics);
        return Ok(Reply::Chunks(chunks));
    }
    if let RequestKind::Produce(produce) = request {
        // Appended now, in order; only the answer waits for the fsyncs.
        let pending = handlers::produce::append(ctx, produce);
        let correlation_id = header.correlation_id;
        return Ok(Reply::Later(Box::pin(async move {
            let Some(response) = pending.respond().await else {
                return Ok(None);
            };
            let mut out = BytesMut::new();
            write_response(
                &mut out,
                correlation_id,
                api,
                version,
                &ResponseKind::Produce(response),
            )?;
            Ok(Some(out.freeze()))
        })));
    }
    let Some(response) = handlers::dispatch(ctx, &header, request, peer).await else {
        return Ok(Reply::None);
    };
    write_response(out, header.correlation_id, api, version, &response)?;
    Ok(Reply::Bytes(out.split().freeze()))
}

/// Writes a chunked response: bytes with `write_all`, file ranges with `sendfile`
/// (falling back to a copy where the kernel refuses it for this file or socket).
async fn write_chunks(stream: &mut OwnedWriteHalf, chunks: Vec<Chunk>) -> Result<(), ConnError> {
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(b) => stream.write_all(&b).await?,
            Chunk::File(slice) => {
                if let Err(e) = send_file(stream.as_ref(), &slice).await {
                    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
                        return Err(e.into());
                    }
                    stream.write_all(&slice.read_bytes()?).await?;
                }
            }
        }
    }
    Ok(())
}

/// Sends a file range to the socket with `sendfile`: the bytes go from the page
/// cache to the socket without passing through user space.
async fn send_file(stream: &TcpStream, slice: &sluice_core::FileSlice) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut offset = slice.position as libc::off_t;
    let mut left = slice.len;
    while left > 0 {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call and
            // `offset` is a valid pointer to a local.
            let n = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    slice.file.as_raw_fd(),
                    &mut offset,
                    left,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                // The file is shorter than the range: it must not be sent partly,
                // as the frame size already promised these bytes.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetched range",
                ));
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_response(
    out: &mut BytesMut,
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<(), ConnError> {
    let start = out.len();
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(out, api.response_header_version(version))
        .map_err(|e| ConnError::Malformed(format!("encoding response header: {e}")))?;
    response
        .encode(out, version)
        .map_err(|e| ConnError::Malformed(format!("encoding response: {e}")))?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}
