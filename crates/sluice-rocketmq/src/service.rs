//! The MessagingService RPCs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::filter::Filter;
use sluice_core::messaging::group_settings::RetryPolicy;
use sluice_core::messaging::{Messaging, ReceiveRequest};
use sluice_core::names::validate_group_name;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Streaming};

use crate::convert::{delivery_out, duration, timestamp, timestamp_ms, to_duration};
use crate::pb;
use crate::pb::messaging_service_server::MessagingService;
use crate::pb::{Code, Status};
use crate::status::{from_error, ok, status};
use crate::RocketMqServerConfig;

type RpcResult<T> = Result<Response<T>, tonic::Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// Invisible time when a receive does not give one.
const DEFAULT_INVISIBLE: Duration = Duration::from_secs(30);
/// Longest invisible time accepted (RocketMQ's limit).
const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3600);
/// Long-poll time when a receive does not give one, and the longest accepted.
const DEFAULT_LONG_POLL: Duration = Duration::from_secs(20);
const MAX_LONG_POLL: Duration = Duration::from_secs(60);
/// Messages per receive when the request asks for none or too many.
const RECEIVE_BATCH_MAX: usize = 64;
/// Commands queued for one client's Telemetry stream; beyond it the client is
/// not keeping up and a command is dropped (a check-back is retried later).
const TELEMETRY_QUEUE: usize = 64;
/// Connected clients tracked for Telemetry (bounded; the oldest beyond it are
/// not reachable for check-back until they reconnect).
const CLIENTS_MAX: usize = 10_000;

/// Parsed filter expressions kept for reuse: consumers send the same expression
/// with every long poll, and parsing SQL runs on a thread of its own.
const FILTER_CACHE_MAX: usize = 1024;

/// A client with an open Telemetry stream.
struct Client {
    group: Option<String>,
    /// Topics a producer said it publishes to: check-backs for them go here.
    topics: Vec<String>,
    sender: mpsc::Sender<Result<pb::TelemetryCommand, tonic::Status>>,
}

/// The gRPC service.
#[derive(Clone)]
pub struct RocketMqService {
    messaging: Messaging,
    config: Arc<RocketMqServerConfig>,
    clients: Arc<Mutex<HashMap<String, Client>>>,
    round_robin: Arc<AtomicU64>,
    filters: Arc<Mutex<HashMap<(bool, String), Filter>>>,
}

fn client_id<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn resource_name(r: &Option<pb::Resource>) -> (String, String) {
    r.as_ref()
        .map(|r| (r.resource_namespace.clone(), r.name.clone()))
        .unwrap_or_default()
}

impl RocketMqService {
    /// Asks producers about half messages nobody resolved, over their Telemetry
    /// streams, until `shutdown`. A check with no producer of the topic connected
    /// still counts against the half message's checks.
    pub async fn run_transaction_checks(&self, shutdown: impl std::future::Future<Output = ()>) {
        let mut timer = tokio::time::interval(Duration::from_secs(1));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = timer.tick() => {}
            }
            for check in self.messaging.transactions_to_check().await {
                let sender = self
                    .clients
                    .lock()
                    .values()
                    .find(|c| c.topics.contains(&check.topic))
                    .map(|c| c.sender.clone());
                let Some(sender) = sender else {
                    tracing::debug!(topic = %check.topic, transaction_id = %check.transaction_id,
                        "no producer of the topic is connected for a transaction check");
                    continue;
                };
                let stored = sluice_core::messaging::StoredMessage {
                    topic: check.topic.clone(),
                    partition: check.partition,
                    offset: -1,
                    store_timestamp: check.message.born_timestamp,
                    message: check.message,
                };
                let mut message = crate::convert::message_out(
                    &stored,
                    "",
                    &self.store_host(),
                    pb::MessageType::Transaction,
                );
                if let Some(sys) = message.system_properties.as_mut() {
                    sys.queue_offset = None;
                }
                let command = pb::TelemetryCommand {
                    status: Some(ok()),
                    command: Some(
                        pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                            pb::RecoverOrphanedTransactionCommand {
                                message: Some(message),
                                transaction_id: check.transaction_id.clone(),
                            },
                        ),
                    ),
                };
                if sender.try_send(Ok(command)).is_err() {
                    tracing::debug!(transaction_id = %check.transaction_id,
                        "a producer's telemetry stream is full or closed; the check is retried later");
                }
            }
        }
    }

    /// A service over the broker's messaging.
    pub fn new(messaging: Messaging, config: RocketMqServerConfig) -> Self {
        RocketMqService {
            messaging,
            config: Arc::new(config),
            clients: Arc::new(Mutex::new(HashMap::new())),
            round_robin: Arc::new(AtomicU64::new(0)),
            filters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn endpoints(&self) -> pb::Endpoints {
        let host = &self.config.advertised_host;
        let scheme = if host.parse::<std::net::Ipv4Addr>().is_ok() {
            pb::AddressScheme::IPv4
        } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
            pb::AddressScheme::IPv6
        } else {
            pb::AddressScheme::DomainName
        };
        pb::Endpoints {
            scheme: scheme as i32,
            addresses: vec![pb::Address {
                host: host.clone(),
                port: self.config.advertised_port,
            }],
        }
    }

    fn store_host(&self) -> String {
        format!(
            "{}:{}",
            self.config.advertised_host, self.config.advertised_port
        )
    }

    fn queues(&self, namespace: &str, topic: &str) -> Result<Vec<pb::MessageQueue>, Status> {
        let info = self.messaging.broker().topic(topic).ok_or_else(|| {
            status(
                Code::TopicNotFound,
                format!("topic {topic:?} does not exist"),
            )
        })?;
        let broker = pb::Broker {
            name: format!("sluice-{}", self.messaging.broker().node_id()),
            id: 0,
            endpoints: Some(self.endpoints()),
        };
        Ok(info
            .partitions
            .iter()
            .map(|p| pb::MessageQueue {
                topic: Some(pb::Resource {
                    resource_namespace: namespace.to_string(),
                    name: topic.to_string(),
                }),
                id: p.index,
                permission: pb::Permission::ReadWrite as i32,
                broker: Some(broker.clone()),
                accept_message_types: vec![
                    pb::MessageType::Normal as i32,
                    pb::MessageType::Fifo as i32,
                    pb::MessageType::Delay as i32,
                    pb::MessageType::Transaction as i32,
                ],
            })
            .collect())
    }

    /// The retry policy a consumer of `group` gets: the group's own settings
    /// over the broker's defaults.
    fn consumer_retry_policy(&self, group: &str) -> pb::RetryPolicy {
        let settings = self.messaging.group_settings().effective(group);
        let ms = |ms: i64| to_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let strategy = match settings.retry {
            RetryPolicy::Customized { backoff_ms } => {
                pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                    next: backoff_ms.into_iter().map(ms).collect(),
                })
            }
            RetryPolicy::Exponential {
                initial_backoff_ms,
                max_backoff_ms,
                multiplier,
            } => pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                initial: Some(ms(initial_backoff_ms)),
                max: Some(ms(max_backoff_ms)),
                // The protocol's field is a float; the setting is bounded to
                // 1.0..=10.0, which it holds well enough.
                multiplier: multiplier as f32,
            }),
        };
        pb::RetryPolicy {
            max_attempts: i32::try_from(settings.max_delivery_attempts).unwrap_or(i32::MAX),
            strategy: Some(strategy),
        }
    }

    /// The settings the server answers a client's settings with: the client's
    /// own, plus the retry policy and limits the server decides. A consumer gets
    /// its group's retry policy (the group is in its subscription settings).
    fn answer_settings(&self, mut s: pb::Settings) -> pb::Settings {
        let producer = s.client_type == Some(pb::ClientType::Producer as i32);
        let group = match s.pub_sub.as_ref() {
            Some(pb::settings::PubSub::Subscription(sub)) => resource_name(&sub.group).1,
            _ => String::new(),
        };
        s.backoff_policy = Some(if producer {
            pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: Some(to_duration(Duration::from_millis(10))),
                        max: Some(to_duration(Duration::from_secs(1))),
                        multiplier: 2.0,
                    },
                )),
            }
        } else {
            self.consumer_retry_policy(&group)
        });
        match s.pub_sub.as_mut() {
            Some(pb::settings::PubSub::Publishing(p)) => {
                p.max_body_size = self.config.max_body_bytes as i32;
                p.validate_message_type = false;
            }
            Some(pb::settings::PubSub::Subscription(sub)) => {
                sub.fifo.get_or_insert(false);
                sub.receive_batch_size.get_or_insert(32);
                sub.long_polling_timeout
                    .get_or_insert(to_duration(DEFAULT_LONG_POLL));
            }
            None => {}
        }
        s
    }

    /// The parsed filter, from the cache when it was seen before. Invalid
    /// expressions are not cached.
    fn filter(
        &self,
        sql: bool,
        expression: &str,
    ) -> Result<Filter, sluice_core::filter::FilterError> {
        let key = (sql, expression.to_string());
        if let Some(f) = self.filters.lock().get(&key) {
            return Ok(f.clone());
        }
        let parsed = if sql {
            Filter::sql(expression)?
        } else {
            Filter::tags(expression)?
        };
        let mut cache = self.filters.lock();
        if cache.len() >= FILTER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, parsed.clone());
        Ok(parsed)
    }

    fn pick_partition(&self, topic: &str, sys: &pb::SystemProperties) -> Result<i32, Status> {
        let info = self.messaging.broker().topic(topic).ok_or_else(|| {
            status(
                Code::TopicNotFound,
                format!("topic {topic:?} does not exist"),
            )
        })?;
        let count = info.partitions.len().max(1) as i32;
        // Clients pick the queue from the route and say which in `queue_id`.
        if (0..count).contains(&sys.queue_id) {
            return Ok(sys.queue_id);
        }
        if let Some(group) = &sys.message_group {
            // Messages of one group share a partition, which keeps their order.
            let h = sluice_core::filter::tag_hash(group);
            return Ok((h % count as u32) as i32);
        }
        Ok((self.round_robin.fetch_add(1, Ordering::Relaxed) % count as u64) as i32)
    }

    async fn send_one(&self, m: &pb::Message) -> pb::SendResultEntry {
        let (_, topic) = resource_name(&m.topic);
        let sys = m.system_properties.clone().unwrap_or_default();
        let failed = |s: Status| pb::SendResultEntry {
            status: Some(s),
            message_id: sys.message_id.clone(),
            ..Default::default()
        };
        let message = match crate::convert::message_in(m, self.config.max_body_bytes) {
            Ok(message) => message,
            Err(s) => return failed(s),
        };
        let partition = match self.pick_partition(&topic, &sys) {
            Ok(p) => p,
            Err(s) => return failed(s),
        };
        let deliver_at = sys.delivery_timestamp.as_ref().map(timestamp_ms);
        let sent = if sys.message_type == pb::MessageType::Transaction as i32 {
            self.messaging
                .prepare(&topic, partition, &message, deliver_at)
                .await
        } else {
            self.messaging
                .send(&topic, partition, &message, deliver_at)
                .await
        };
        match sent {
            Ok(sent) => pb::SendResultEntry {
                status: Some(ok()),
                message_id: message.message_id.clone(),
                transaction_id: sent.transaction_id.unwrap_or_default(),
                offset: sent.offset,
                recall_handle: sent.recall_handle.unwrap_or_default(),
            },
            Err(e) => failed(from_error(&e)),
        }
    }
}

fn overall(statuses: &[Status]) -> Status {
    match statuses {
        [] => ok(),
        [one] => one.clone(),
        many if many.iter().all(|s| s.code == Code::Ok as i32) => ok(),
        many => {
            let first = &many[0];
            if many.iter().all(|s| s.code == first.code) {
                first.clone()
            } else {
                status(Code::MultipleResults, "entries have different results")
            }
        }
    }
}

#[tonic::async_trait]
impl MessagingService for RocketMqService {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> RpcResult<pb::QueryRouteResponse> {
        let (namespace, topic) = resource_name(&request.get_ref().topic);
        Ok(Response::new(match self.queues(&namespace, &topic) {
            Ok(message_queues) => pb::QueryRouteResponse {
                status: Some(ok()),
                message_queues,
            },
            Err(s) => pb::QueryRouteResponse {
                status: Some(s),
                message_queues: Vec::new(),
            },
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> RpcResult<pb::HeartbeatResponse> {
        let (_, group) = resource_name(&request.get_ref().group);
        if let Some(id) = client_id(&request) {
            if let Some(c) = self.clients.lock().get_mut(&id) {
                if !group.is_empty() {
                    c.group = Some(group);
                }
            }
        }
        Ok(Response::new(pb::HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> RpcResult<pb::SendMessageResponse> {
        let messages = &request.get_ref().messages;
        if messages.is_empty() {
            return Ok(Response::new(pb::SendMessageResponse {
                status: Some(status(Code::BadRequest, "no messages to send")),
                entries: Vec::new(),
            }));
        }
        let mut entries = Vec::with_capacity(messages.len());
        for m in messages {
            entries.push(self.send_one(m).await);
        }
        let statuses: Vec<Status> = entries.iter().filter_map(|e| e.status.clone()).collect();
        Ok(Response::new(pb::SendMessageResponse {
            status: Some(overall(&statuses)),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> RpcResult<pb::QueryAssignmentResponse> {
        let (namespace, topic) = resource_name(&request.get_ref().topic);
        // Shared subscriptions: every consumer of a group may take from every
        // queue, so each is assigned all of them.
        Ok(Response::new(match self.queues(&namespace, &topic) {
            Ok(queues) => pb::QueryAssignmentResponse {
                status: Some(ok()),
                assignments: queues
                    .into_iter()
                    .map(|q| pb::Assignment {
                        message_queue: Some(q),
                    })
                    .collect(),
            },
            Err(s) => pb::QueryAssignmentResponse {
                status: Some(s),
                assignments: Vec::new(),
            },
        }))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> RpcResult<Self::ReceiveMessageStream> {
        use pb::receive_message_response::Content;
        let client_id = client_id(&request);
        let req = request.into_inner();
        let reply = |items: Vec<Content>| -> RpcResult<Self::ReceiveMessageStream> {
            let stream = tokio_stream::iter(
                items
                    .into_iter()
                    .map(|c| Ok(pb::ReceiveMessageResponse { content: Some(c) })),
            );
            Ok(Response::new(Box::pin(stream)))
        };
        let fail = |s: Status| reply(vec![Content::Status(s)]);
        let (_, group) = resource_name(&req.group);
        if let Err(e) = validate_group_name(&group) {
            return fail(from_error(&e));
        }
        let queue = req.message_queue.clone().unwrap_or_default();
        let (namespace, topic) = resource_name(&queue.topic);
        let filter = match req.filter_expression.as_ref() {
            None => Ok(Filter::All),
            Some(f) => self.filter(
                pb::FilterType::try_from(f.r#type) == Ok(pb::FilterType::Sql),
                &f.expression,
            ),
        };
        let filter = match filter {
            Ok(f) => f,
            Err(e) => return fail(status(Code::IllegalFilterExpression, e.to_string())),
        };
        let invisible = match req.invisible_duration.as_ref().map(duration) {
            None => DEFAULT_INVISIBLE,
            Some(Some(d)) if !d.is_zero() && d <= MAX_INVISIBLE => d,
            Some(_) => {
                return fail(status(
                    Code::IllegalInvisibleTime,
                    format!("the invisible duration must be above 0 and at most {MAX_INVISIBLE:?}"),
                ))
            }
        };
        let wait = match req.long_polling_timeout.as_ref().map(duration) {
            None => DEFAULT_LONG_POLL,
            Some(Some(d)) if d <= MAX_LONG_POLL => d,
            Some(_) => {
                return fail(status(
                    Code::IllegalPollingTime,
                    format!("the long polling timeout must be at most {MAX_LONG_POLL:?}"),
                ))
            }
        };
        let max = usize::try_from(req.batch_size)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(1)
            .min(RECEIVE_BATCH_MAX);
        let receive = ReceiveRequest {
            group,
            topic,
            partition: (queue.id >= 0).then_some(queue.id),
            filter,
            max_messages: max,
            invisible,
            wait,
            client_id,
        };
        match self.messaging.receive(receive).await {
            Ok(deliveries) if deliveries.is_empty() => fail(status(
                Code::MessageNotFound,
                "no new message arrived while polling",
            )),
            Ok(deliveries) => {
                let host = self.store_host();
                let mut items = Vec::with_capacity(deliveries.len() + 2);
                items.push(Content::Status(ok()));
                for d in &deliveries {
                    items.push(Content::Message(delivery_out(
                        d, &namespace, &host, invisible,
                    )));
                }
                items.push(Content::DeliveryTimestamp(timestamp(sluice_core::now_ms())));
                reply(items)
            }
            Err(e) => fail(from_error(&e)),
        }
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> RpcResult<pb::AckMessageResponse> {
        let req = request.get_ref();
        let (_, group) = resource_name(&req.group);
        let (_, topic) = resource_name(&req.topic);
        let entries: Vec<pb::AckMessageResultEntry> = req
            .entries
            .iter()
            .map(|e| {
                let s = match self.messaging.ack(&group, &topic, &e.receipt_handle) {
                    Ok(()) => ok(),
                    Err(err) => from_error(&err),
                };
                pb::AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(s),
                }
            })
            .collect();
        let statuses: Vec<Status> = entries.iter().filter_map(|e| e.status.clone()).collect();
        Ok(Response::new(pb::AckMessageResponse {
            status: Some(overall(&statuses)),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> RpcResult<pb::ForwardMessageToDeadLetterQueueResponse> {
        let req = request.get_ref();
        let (_, group) = resource_name(&req.group);
        let (_, topic) = resource_name(&req.topic);
        let s = match self
            .messaging
            .forward_to_dead_letter(&group, &topic, &req.receipt_handle)
            .await
        {
            Ok(()) => ok(),
            Err(e) => from_error(&e),
        };
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
            status: Some(s),
        }))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        _request: Request<pb::PullMessageRequest>,
    ) -> RpcResult<Self::PullMessageStream> {
        let item = pb::PullMessageResponse {
            content: Some(pb::pull_message_response::Content::Status(status(
                Code::NotImplemented,
                "PullMessage is not served; use ReceiveMessage",
            ))),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(item)]))))
    }

    async fn update_offset(
        &self,
        _request: Request<pb::UpdateOffsetRequest>,
    ) -> RpcResult<pb::UpdateOffsetResponse> {
        Ok(Response::new(pb::UpdateOffsetResponse {
            status: Some(status(Code::NotImplemented, "UpdateOffset is not served")),
        }))
    }

    async fn get_offset(
        &self,
        _request: Request<pb::GetOffsetRequest>,
    ) -> RpcResult<pb::GetOffsetResponse> {
        Ok(Response::new(pb::GetOffsetResponse {
            status: Some(status(Code::NotImplemented, "GetOffset is not served")),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        _request: Request<pb::QueryOffsetRequest>,
    ) -> RpcResult<pb::QueryOffsetResponse> {
        Ok(Response::new(pb::QueryOffsetResponse {
            status: Some(status(Code::NotImplemented, "QueryOffset is not served")),
            offset: 0,
        }))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> RpcResult<pb::EndTransactionResponse> {
        let req = request.get_ref();
        let (_, topic) = resource_name(&req.topic);
        let commit = match pb::TransactionResolution::try_from(req.resolution) {
            Ok(pb::TransactionResolution::Commit) => true,
            Ok(pb::TransactionResolution::Rollback) => false,
            _ => {
                return Ok(Response::new(pb::EndTransactionResponse {
                    status: Some(status(
                        Code::BadRequest,
                        "the resolution must be COMMIT or ROLLBACK",
                    )),
                }))
            }
        };
        let s = match self
            .messaging
            .end_transaction(&topic, &req.transaction_id, commit)
            .await
        {
            Ok(_) => ok(),
            Err(e) => from_error(&e),
        };
        Ok(Response::new(pb::EndTransactionResponse {
            status: Some(s),
        }))
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> RpcResult<Self::TelemetryStream> {
        let id = client_id(&request);
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(TELEMETRY_QUEUE);
        if let Some(id) = &id {
            let mut clients = self.clients.lock();
            if clients.len() < CLIENTS_MAX || clients.contains_key(id) {
                clients.insert(
                    id.clone(),
                    Client {
                        group: None,
                        topics: Vec::new(),
                        sender: tx.clone(),
                    },
                );
            }
        }
        let service = self.clone();
        tokio::spawn(async move {
            while let Some(command) = incoming.next().await {
                let Ok(command) = command else { break };
                let Some(pb::telemetry_command::Command::Settings(settings)) = command.command
                else {
                    continue;
                };
                if let Some(pb::settings::PubSub::Subscription(sub)) = settings.pub_sub.as_ref() {
                    // A broadcast consumer's queues start now, so it receives
                    // what is sent from its start on.
                    let group = resource_name(&sub.group).1;
                    let topics: Vec<String> = sub
                        .subscriptions
                        .iter()
                        .map(|e| resource_name(&e.topic).1)
                        .collect();
                    if validate_group_name(&group).is_ok() {
                        if let Err(e) =
                            service
                                .messaging
                                .consumer_subscribed(&group, id.as_deref(), &topics)
                        {
                            tracing::warn!(group = %group, error = %e,
                                "could not start a broadcast consumer's queues; its receives will fail");
                        }
                    }
                }
                if let Some(id) = &id {
                    if let Some(c) = service.clients.lock().get_mut(id) {
                        match settings.pub_sub.as_ref() {
                            Some(pb::settings::PubSub::Subscription(sub)) => {
                                c.group = Some(resource_name(&sub.group).1);
                            }
                            Some(pb::settings::PubSub::Publishing(p)) => {
                                c.topics = p.topics.iter().map(|t| t.name.clone()).collect();
                            }
                            None => {}
                        }
                    }
                }
                let answer = pb::TelemetryCommand {
                    status: Some(ok()),
                    command: Some(pb::telemetry_command::Command::Settings(
                        service.answer_settings(settings),
                    )),
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
            if let Some(id) = id {
                let mut clients = service.clients.lock();
                if clients.get(&id).is_some_and(|c| c.sender.same_channel(&tx)) {
                    clients.remove(&id);
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> RpcResult<pb::NotifyClientTerminationResponse> {
        if let Some(id) = client_id(&request) {
            self.clients.lock().remove(&id);
            // Broadcast progress lives with the client; a terminated one's
            // queues and unacknowledged deliveries go.
            self.messaging.client_terminated(&id);
        }
        Ok(Response::new(pb::NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> RpcResult<pb::ChangeInvisibleDurationResponse> {
        let req = request.get_ref();
        let (_, group) = resource_name(&req.group);
        let (_, topic) = resource_name(&req.topic);
        let invisible = match req.invisible_duration.as_ref().and_then(duration) {
            Some(d) if d <= MAX_INVISIBLE => d,
            _ => {
                return Ok(Response::new(pb::ChangeInvisibleDurationResponse {
                    status: Some(status(
                        Code::IllegalInvisibleTime,
                        format!("the invisible duration must be between 0 and {MAX_INVISIBLE:?}"),
                    )),
                    receipt_handle: String::new(),
                }))
            }
        };
        Ok(Response::new(
            match self.messaging.change_invisible_duration(
                &group,
                &topic,
                &req.receipt_handle,
                invisible,
            ) {
                Ok((handle, _)) => pb::ChangeInvisibleDurationResponse {
                    status: Some(ok()),
                    receipt_handle: handle,
                },
                Err(e) => pb::ChangeInvisibleDurationResponse {
                    status: Some(from_error(&e)),
                    receipt_handle: String::new(),
                },
            },
        ))
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> RpcResult<pb::RecallMessageResponse> {
        let req = request.get_ref();
        let (_, topic) = resource_name(&req.topic);
        Ok(Response::new(
            match self.messaging.recall(&topic, &req.recall_handle).await {
                Ok(message_id) => pb::RecallMessageResponse {
                    status: Some(ok()),
                    message_id,
                },
                Err(e) => pb::RecallMessageResponse {
                    status: Some(from_error(&e)),
                    message_id: String::new(),
                },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::messaging::MessagingConfig;
    use sluice_core::{Broker, BrokerConfig, ConfigChange, TopicConfig};

    use super::*;

    fn service(dir: &std::path::Path) -> RocketMqService {
        let broker = Broker::open(BrokerConfig::new(dir.to_path_buf())).unwrap();
        let config = MessagingConfig {
            max_delivery_attempts: 7,
            ..MessagingConfig::default()
        };
        RocketMqService::new(
            Messaging::open(broker, config).unwrap(),
            RocketMqServerConfig {
                advertised_host: "127.0.0.1".into(),
                advertised_port: 8081,
                max_body_bytes: 1 << 20,
            },
        )
    }

    fn set(k: &str, v: &str) -> ConfigChange {
        ConfigChange::Set(k.to_string(), v.to_string())
    }

    fn consumer_settings(group: &str) -> pb::Settings {
        pb::Settings {
            client_type: Some(pb::ClientType::SimpleConsumer as i32),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: group.to_string(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn consumers_get_their_groups_retry_policy() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        service
            .messaging
            .alter_group_settings(
                "exp",
                vec![
                    set("retry.policy", "exponential"),
                    set("retry.initial.backoff.ms", "500"),
                    set("retry.max.backoff.ms", "8000"),
                    set("retry.backoff.multiplier", "3"),
                    set("max.delivery.attempts", "4"),
                ],
                false,
            )
            .await
            .unwrap();
        service
            .messaging
            .alter_group_settings("steps", vec![set("retry.backoff.ms", "1000,2500")], false)
            .await
            .unwrap();

        let policy = service
            .answer_settings(consumer_settings("exp"))
            .backoff_policy
            .unwrap();
        assert_eq!(policy.max_attempts, 4);
        let Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) = policy.strategy else {
            panic!("not exponential: {policy:?}");
        };
        assert_eq!(e.initial, Some(to_duration(Duration::from_millis(500))));
        assert_eq!(e.max, Some(to_duration(Duration::from_secs(8))));
        assert_eq!(e.multiplier, 3.0);

        let policy = service
            .answer_settings(consumer_settings("steps"))
            .backoff_policy
            .unwrap();
        assert_eq!(policy.max_attempts, 7, "the broker's default");
        let Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) = policy.strategy else {
            panic!("not customized: {policy:?}");
        };
        assert_eq!(
            c.next,
            [
                to_duration(Duration::from_millis(1000)),
                to_duration(Duration::from_millis(2500))
            ]
        );

        // A group without settings gets RocketMQ's 16 levels.
        let policy = service
            .answer_settings(consumer_settings("other"))
            .backoff_policy
            .unwrap();
        assert_eq!(policy.max_attempts, 7);
        let Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) = policy.strategy else {
            panic!("not customized: {policy:?}");
        };
        assert_eq!(c.next.len(), 16);
        assert_eq!(c.next[0], to_duration(Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn broadcast_receive_without_client_id_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        service
            .messaging
            .broker()
            .create_topic("t", 1, 1, TopicConfig::default(), false)
            .unwrap();
        service
            .messaging
            .alter_group_settings("b", vec![set("consume.mode", "broadcast")], false)
            .await
            .unwrap();
        let request = pb::ReceiveMessageRequest {
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "b".into(),
            }),
            message_queue: Some(pb::MessageQueue {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: "t".into(),
                }),
                id: -1,
                ..Default::default()
            }),
            long_polling_timeout: Some(to_duration(Duration::ZERO)),
            ..Default::default()
        };
        let mut stream = service
            .receive_message(Request::new(request))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        let Some(pb::receive_message_response::Content::Status(s)) = first.content else {
            panic!("not a status: {first:?}");
        };
        assert_eq!(s.code, Code::BadRequest as i32, "{s:?}");
        assert!(s.message.contains("client id"), "{s:?}");
    }
}
