//! `sluice serve`: wires storage, core and the protocol front ends together.

use anyhow::Context;
use sluice_core::messaging::Messaging;
use sluice_core::Broker;
use sluice_kafka::KafkaServerConfig;
use sluice_rocketmq::RocketMqServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeArgs;

/// Threads for blocking storage work (fsyncs of `always` topics, compaction).
const BLOCKING_THREADS_MAX: usize = 64;
/// How long shutdown waits for RocketMQ clients' open streams to end.
const GRPC_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the broker until SIGINT or SIGTERM, then flushes every log and returns.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
        .with_context(|| format!("invalid log level {:?}", settings.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        // fsyncs and other blocking storage work run here. More threads than this
        // do not make a disk faster; further work waits in the pool's queue, and
        // each idle thread would keep its stack and allocator arena.
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: crate::config::Settings) -> anyhow::Result<()> {
    let data_dir = settings.broker.data_dir.clone();
    let broker_config = settings.broker.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config))
        .await?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let listener = TcpListener::bind(&settings.kafka_listen)
        .await
        .with_context(|| format!("binding Kafka listener {}", settings.kafka_listen))?;
    let kafka_addr = listener.local_addr()?;
    let (host, port) = match &settings.kafka_advertised {
        Some(adv) => split_host_port(adv)?,
        None => (kafka_addr.ip().to_string(), i32::from(kafka_addr.port())),
    };
    let http_listener = TcpListener::bind(&settings.http_listen)
        .await
        .with_context(|| format!("binding HTTP listener {}", settings.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_listener = TcpListener::bind(&settings.grpc_listen)
        .await
        .with_context(|| format!("binding RocketMQ gRPC listener {}", settings.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (grpc_host, grpc_port) = match &settings.grpc_advertised {
        Some(adv) => split_host_port(adv)?,
        None => (grpc_addr.ip().to_string(), i32::from(grpc_addr.port())),
    };
    let messaging = {
        let broker = broker.clone();
        let config = settings.messaging.clone();
        tokio::task::spawn_blocking(move || Messaging::open(broker, config))
            .await?
            .context("opening the delayed-message log")?
    };
    tracing::info!(
        kafka_listen = %kafka_addr,
        http_listen = %http_addr,
        grpc_listen = %grpc_addr,
        kafka_advertised = %format!("{host}:{port}"),
        data_dir = %data_dir.display(),
        flush = settings.broker.log_defaults.flush.name(),
        "sluice broker listening"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let maintenance = {
        let broker = broker.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { broker.run_maintenance(stopped(rx)).await })
    };
    let kafka = tokio::spawn(sluice_kafka::serve(
        listener,
        messaging.clone(),
        KafkaServerConfig::new(host, port),
        stopped(stop_rx.clone()),
    ));
    let messaging_task = {
        let messaging = messaging.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { messaging.run(stopped(rx)).await })
    };
    let grpc = tokio::spawn(sluice_rocketmq::serve(
        grpc_listener,
        messaging.clone(),
        RocketMqServerConfig {
            advertised_host: grpc_host,
            advertised_port: grpc_port,
            max_body_bytes: settings.broker.log_defaults.max_message_bytes,
        },
        stopped(stop_rx.clone()),
    ));
    let http = tokio::spawn(sluice_admin::serve(
        http_listener,
        broker.clone(),
        stopped(stop_rx.clone()),
    ));
    wait_for_signal().await?;
    tracing::info!("shutting down");
    // Waiting JoinGroup/SyncGroup requests are answered first, so connections can
    // finish their current request and close.
    broker.begin_shutdown();
    let _ = stop_tx.send(true);
    let _ = kafka.await;
    // gRPC's graceful shutdown waits for open streams, and a client's Telemetry
    // stream stays open as long as the client lives: give them a moment, then go on.
    match tokio::time::timeout(GRPC_DRAIN, grpc).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "RocketMQ listener failed"),
        Ok(_) => {}
        Err(_) => tracing::info!("RocketMQ clients still connected; closing their streams"),
    }
    let _ = messaging_task.await;
    let _ = http.await;
    let _ = maintenance.await;
    tokio::task::spawn_blocking(move || broker.flush_all())
        .await?
        .context("final flush")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn split_host_port(address: &str) -> anyhow::Result<(String, i32)> {
    let (h, p) = address
        .rsplit_once(':')
        .with_context(|| format!("advertised address {address:?} needs host:port"))?;
    Ok((h.to_string(), p.parse::<i32>().context("advertised port")?))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
