//! Sluice's RocketMQ 5 front end: the `apache.rocketmq.v2.MessagingService` gRPC
//! service that the official RocketMQ 5 clients (Java, Rust, Python, Go, ...)
//! speak, translated into calls on the core's [`sluice_core::messaging`]
//! services. Topics are Sluice topics; a RocketMQ message queue is a partition.

pub mod pb {
    //! Messages and service generated from `proto/messaging.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("apache.rocketmq.v2");
}

mod convert;
mod service;
mod status;

use std::future::Future;

use sluice_core::messaging::Messaging;
use tokio::net::TcpListener;

pub use service::RocketMqService;

/// How the front end presents itself.
#[derive(Debug, Clone)]
pub struct RocketMqServerConfig {
    /// Host clients are told to dial (QueryRoute answers with it).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Largest message body accepted (bytes).
    pub max_body_bytes: usize,
}

/// Serves RocketMQ clients on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    messaging: Messaging,
    config: RocketMqServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = RocketMqService::new(messaging, config);
    let (stop_checks, checks_stopped) = tokio::sync::oneshot::channel::<()>();
    let checker = service.clone();
    let checks = tokio::spawn(async move {
        checker
            .run_transaction_checks(async {
                let _ = checks_stopped.await;
            })
            .await
    });
    let result = tonic::transport::Server::builder()
        .add_service(pb::messaging_service_server::MessagingServiceServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    let _ = stop_checks.send(());
    let _ = checks.await;
    result
}
