//! A minimal Kafka client connection: size-prefixed frames over one TCP stream, request
//! headers with correlation ids, and API version negotiation through ApiVersions.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The client id sent in every request header.
pub const CLIENT_ID: &str = "sluice-cli";

/// Largest response frame accepted; a larger size prefix means a broken stream.
const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Upper bound on establishing the TCP connection.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Upper bound on waiting for one response, on top of any wait the request asks the broker for.
pub const RESPONSE_TIMEOUT_MS: u64 = 30_000;

/// A Kafka error code returned by the broker, with the context it applies to.
#[derive(Debug)]
pub struct BrokerError {
    /// What the error applies to, e.g. `topic "orders"` or `partition 3`.
    pub context: String,
    /// The Kafka error code.
    pub code: i16,
    /// The broker's error message, when it sent one.
    pub message: Option<String>,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, error_name(self.code))?;
        if let Some(message) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerError {}

/// The Kafka name of an error code, as the Java client spells it (`TOPIC_ALREADY_EXISTS`).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE_{code}"),
        Some(error) => screaming_snake(&error.to_string()),
    }
}

/// `TopicAlreadyExists` -> `TOPIC_ALREADY_EXISTS`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Fails with a [`BrokerError`] when `code` is not 0.
pub fn check(
    code: i16,
    message: Option<&StrBytes>,
    context: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    Err(BrokerError {
        context: context(),
        code,
        message: message.map(|m| m.as_str().to_string()),
    }
    .into())
}

/// Whether the broker marks this error code as worth retrying.
pub fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// A request written to the connection whose response has not been read yet.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    correlation_id: i32,
    api_key: i16,
    version: i16,
}

/// One connection to one broker, with the API versions both sides support.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    correlation_id_next: i32,
    /// API key -> (min, max) version the broker supports.
    broker_versions: HashMap<i16, (i16, i16)>,
    addr: String,
}

impl Client {
    /// Connects to `addr` and negotiates API versions with ApiVersions.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            TcpStream::connect(addr),
        )
        .await
        .map_err(|_| anyhow!("connecting to {addr}: timed out after {CONNECT_TIMEOUT_MS} ms"))?
        .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read_half, write_half) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(read_half),
            writer: BufWriter::new(write_half),
            correlation_id_next: 1,
            broker_versions: HashMap::new(),
            addr: addr.to_string(),
        };
        client.negotiate().await?;
        Ok(client)
    }

    /// Asks the broker which versions it supports, at our newest ApiVersions version first and
    /// at the version the broker names when it rejects that one.
    async fn negotiate(&mut self) -> anyhow::Result<()> {
        let mut version = ApiVersionsRequest::VERSIONS.max;
        let response = loop {
            let request = if version >= 3 {
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    )))
            } else {
                ApiVersionsRequest::default()
            };
            let pending = self.write_request(&request, version).await?;
            let frame = tokio::time::timeout(
                Duration::from_millis(RESPONSE_TIMEOUT_MS),
                self.read_frame(),
            )
            .await
            .map_err(|_| anyhow!("no ApiVersions response from {}", self.addr))??;
            let response = decode_api_versions(frame, pending.correlation_id, version)?;
            // UNSUPPORTED_VERSION: the broker lists its own range; retry at its newest.
            if response.error_code == 35 && version > 0 {
                let broker_max = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| k.max_version)
                    .unwrap_or(0);
                version = broker_max.min(version - 1).max(0);
                continue;
            }
            break response;
        };
        check(response.error_code, None, || "ApiVersions".to_string())?;
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The newest version of `Req` both the broker and kafka-protocol support.
    pub fn version<Req: Request>(&self) -> anyhow::Result<i16> {
        let name = api_name(Req::KEY);
        let (broker_min, broker_max) = *self
            .broker_versions
            .get(&Req::KEY)
            .ok_or_else(|| anyhow!("the broker at {} does not support {name}", self.addr))?;
        let ours = Req::VERSIONS;
        let version = broker_max.min(ours.max);
        if version < broker_min.max(ours.min) {
            bail!(
                "no common {name} version: broker supports {broker_min}..={broker_max}, \
                 this client {}..={}",
                ours.min,
                ours.max
            );
        }
        Ok(version)
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub async fn send<Req: Request>(&mut self, request: &Req) -> anyhow::Result<Req::Response> {
        let version = self.version::<Req>()?;
        self.send_version(request, version).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send_version<Req: Request>(
        &mut self,
        request: &Req,
        version: i16,
    ) -> anyhow::Result<Req::Response> {
        let pending = self.write_request(request, version).await?;
        self.read_response::<Req>(pending, Duration::ZERO).await
    }

    /// Writes `request` at `version` without waiting for the response; pair it with
    /// [`Client::read_response`] (responses come back in request order).
    pub async fn write_request<Req: Request>(
        &mut self,
        request: &Req,
        version: i16,
    ) -> anyhow::Result<Pending> {
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(Req::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let frame = encode_frame(&header, request, version)?;
        self.writer
            .write_all(&frame)
            .await
            .with_context(|| format!("writing to {}", self.addr))?;
        self.writer
            .flush()
            .await
            .with_context(|| format!("writing to {}", self.addr))?;
        Ok(Pending {
            correlation_id,
            api_key: Req::KEY,
            version,
        })
    }

    /// Reads the response to `pending`; `extra_wait` is added to the response timeout for
    /// requests that ask the broker to wait (Fetch, Produce with acks).
    pub async fn read_response<Req: Request>(
        &mut self,
        pending: Pending,
        extra_wait: Duration,
    ) -> anyhow::Result<Req::Response> {
        debug_assert_eq!(pending.api_key, Req::KEY);
        let timeout = Duration::from_millis(RESPONSE_TIMEOUT_MS) + extra_wait;
        let frame = tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| {
                anyhow!(
                    "no {} response from {} within {} ms",
                    api_name(Req::KEY),
                    self.addr,
                    timeout.as_millis()
                )
            })??;
        decode_response::<Req>(frame, pending.correlation_id, pending.version)
    }

    async fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let len = self
            .reader
            .read_i32()
            .await
            .with_context(|| format!("reading from {} (connection closed?)", self.addr))?;
        let len = usize::try_from(len).map_err(|_| anyhow!("negative frame size {len}"))?;
        if len > FRAME_BYTES_MAX {
            bail!("response frame of {len} bytes exceeds the limit of {FRAME_BYTES_MAX}");
        }
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact(&mut buf)
            .await
            .with_context(|| format!("reading from {}", self.addr))?;
        Ok(Bytes::from(buf))
    }
}

/// The name of an API key for messages (`Fetch`, `CreateTopics`).
fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(()) => format!("API {key}"),
    }
}

/// Encodes a request frame: size prefix, header, body.
pub fn encode_frame<Req: Request>(
    header: &RequestHeader,
    request: &Req,
    version: i16,
) -> anyhow::Result<BytesMut> {
    let header_version = Req::header_version(version);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .context("encoding request header")?;
    request
        .encode(&mut buf, version)
        .with_context(|| format!("encoding {} v{version}", api_name(Req::KEY)))?;
    let body_len = i32::try_from(buf.len() - 4).context("request too large")?;
    buf[..4].copy_from_slice(&body_len.to_be_bytes());
    Ok(buf)
}

/// Decodes an ApiVersions response; a broker that rejects the request's version answers in
/// v0, so an UNSUPPORTED_VERSION answer is decoded as v0.
fn decode_api_versions(
    mut frame: Bytes,
    correlation_id: i32,
    version: i16,
) -> anyhow::Result<ApiVersionsResponse> {
    let header = ResponseHeader::decode(&mut frame, 0).context("decoding ApiVersions header")?;
    if header.correlation_id != correlation_id {
        bail!(
            "ApiVersions response has correlation id {} but {correlation_id} was expected",
            header.correlation_id
        );
    }
    if frame.len() < 2 {
        bail!("ApiVersions response of {} bytes is too short", frame.len());
    }
    let error_code = i16::from_be_bytes([frame[0], frame[1]]);
    let body_version = if error_code == 35 { 0 } else { version };
    ApiVersionsResponse::decode(&mut frame, body_version)
        .with_context(|| format!("decoding ApiVersions v{body_version} response"))
}

/// Decodes a response frame (without its size prefix) and checks its correlation id.
pub fn decode_response<Req: Request>(
    mut frame: Bytes,
    correlation_id: i32,
    version: i16,
) -> anyhow::Result<Req::Response> {
    let name = api_name(Req::KEY);
    let header_version = <Req::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version)
        .with_context(|| format!("decoding {name} response header"))?;
    if header.correlation_id != correlation_id {
        bail!(
            "{name} response has correlation id {} but {correlation_id} was expected",
            header.correlation_id
        );
    }
    let response = Req::Response::decode(&mut frame, version)
        .with_context(|| format!("decoding {name} v{version} response"))?;
    if frame.has_remaining() {
        tracing::debug!(
            "{name} v{version} response has {} trailing bytes",
            frame.remaining()
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    #[test]
    fn error_names_follow_the_java_spelling() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(30_000), "UNKNOWN_ERROR_CODE_30000");
    }

    #[test]
    fn broker_error_message_names_the_code_and_context() {
        let err = check(36, Some(&StrBytes::from_static_str("exists")), || {
            "topic \"t\"".to_string()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic \"t\": TOPIC_ALREADY_EXISTS (exists)"
        );
    }

    #[test]
    fn request_frame_starts_with_its_size_and_header() {
        let header = RequestHeader::default()
            .with_request_api_key(MetadataRequest::KEY)
            .with_request_api_version(12)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let frame = encode_frame(&header, &MetadataRequest::default(), 12).unwrap();
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(size as usize, frame.len() - 4);
        assert_eq!(&frame[4..6], &3i16.to_be_bytes());
        assert_eq!(&frame[6..8], &12i16.to_be_bytes());
        assert_eq!(&frame[8..12], &7i32.to_be_bytes());
    }

    /// A one-connection fake broker: rejects ApiVersions above v2 like an older broker, then
    /// answers Metadata with one topic.
    async fn fake_broker(listener: tokio::net::TcpListener) -> anyhow::Result<Vec<(i16, i16)>> {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
        use kafka_protocol::messages::{MetadataResponse, TopicName};
        use kafka_protocol::protocol::decode_request_header_from_buffer;

        let (mut stream, _) = listener.accept().await?;
        let mut seen = Vec::new();
        loop {
            let len = match stream.read_i32().await {
                Ok(len) => len as usize,
                Err(_) => return Ok(seen),
            };
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await?;
            let mut body = Bytes::from(body);
            let header = decode_request_header_from_buffer(&mut body)?;
            seen.push((header.request_api_key, header.request_api_version));
            let mut out = BytesMut::new();
            out.put_i32(0);
            let response_header =
                ResponseHeader::default().with_correlation_id(header.correlation_id);
            if header.request_api_key == ApiKey::ApiVersions as i16 {
                response_header.encode(&mut out, 0)?;
                let versions = vec![
                    ApiVersion::default()
                        .with_api_key(18)
                        .with_min_version(0)
                        .with_max_version(2),
                    ApiVersion::default()
                        .with_api_key(3)
                        .with_min_version(0)
                        .with_max_version(9),
                ];
                let (error_code, body_version) = if header.request_api_version > 2 {
                    (35, 0)
                } else {
                    (0, header.request_api_version)
                };
                ApiVersionsResponse::default()
                    .with_error_code(error_code)
                    .with_api_keys(versions)
                    .encode(&mut out, body_version)?;
            } else {
                let version = header.request_api_version;
                response_header.encode(&mut out, MetadataResponse::header_version(version))?;
                MetadataResponse::default()
                    .with_topics(vec![MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))])
                    .encode(&mut out, version)?;
            }
            let len = (out.len() - 4) as i32;
            out[..4].copy_from_slice(&len.to_be_bytes());
            stream.write_all(&out).await?;
        }
    }

    #[tokio::test]
    async fn client_falls_back_to_the_brokers_api_versions_version_and_caps_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = tokio::spawn(fake_broker(listener));
        let mut client = Client::connect(&addr).await.unwrap();
        assert_eq!(client.version::<MetadataRequest>().unwrap(), 9);
        let response = client.send(&MetadataRequest::default()).await.unwrap();
        assert_eq!(response.topics.len(), 1);
        drop(client);
        let seen = broker.await.unwrap().unwrap();
        assert_eq!(seen, vec![(18, 4), (18, 2), (3, 9)]);
    }
}
