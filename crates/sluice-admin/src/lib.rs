//! Sluice's HTTP listener: a JSON admin API and Prometheus metrics.
//!
//! - `GET /healthz`: `ok` while the broker serves.
//! - `GET /api/topics`: every topic with its partitions, offsets and sizes.
//! - `GET /api/topics/{name}`: one topic, with its configs.
//! - `GET /metrics`: Prometheus text exposition of partition offsets and sizes.

use std::fmt::Write;
use std::future::Future;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sluice_core::{Broker, PartitionStats};
use tokio::net::TcpListener;

#[derive(Serialize)]
struct TopicView {
    name: String,
    partitions: Vec<PartitionStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The admin routes over a broker.
pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/topics", get(list_topics))
        .route("/api/topics/{name}", get(describe_topic))
        .route("/metrics", get(metrics))
        .with_state(broker)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(shutdown)
        .await
}

fn topics(broker: &Broker) -> Vec<TopicView> {
    let mut views: Vec<TopicView> = Vec::new();
    for stats in broker.partition_stats() {
        match views.last_mut() {
            Some(v) if v.name == stats.topic => v.partitions.push(stats),
            _ => views.push(TopicView {
                name: stats.topic.clone(),
                partitions: vec![stats],
                configs: None,
            }),
        }
    }
    views
}

async fn list_topics(State(broker): State<Broker>) -> Json<Vec<TopicView>> {
    Json(topics(&broker))
}

async fn describe_topic(State(broker): State<Broker>, Path(name): Path<String>) -> Response {
    let Ok(entries) = broker.describe_topic_config(&name) else {
        return (StatusCode::NOT_FOUND, format!("no topic {name}\n")).into_response();
    };
    let Some(mut view) = topics(&broker).into_iter().find(|t| t.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no topic {name}\n")).into_response();
    };
    view.configs = Some(
        entries
            .into_iter()
            .map(|e| (e.name.to_string(), serde_json::Value::String(e.value)))
            .collect(),
    );
    Json(view).into_response()
}

/// Reads one gauge's value off a partition.
type Gauge = fn(&PartitionStats) -> String;

async fn metrics(State(broker): State<Broker>) -> Response {
    let stats = broker.partition_stats();
    let mut out = String::new();
    let families: [(&str, &str, Gauge); 4] = [
        (
            "sluice_partition_log_start_offset",
            "First offset still stored.",
            |s| s.log_start_offset.to_string(),
        ),
        (
            "sluice_partition_log_end_offset",
            "Offset the next record will get.",
            |s| s.log_end_offset.to_string(),
        ),
        (
            "sluice_partition_size_bytes",
            "Bytes stored in the partition's segments.",
            |s| s.size_bytes.to_string(),
        ),
        (
            "sluice_partition_segments",
            "Segments of the partition.",
            |s| s.segments.to_string(),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &stats {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                s.topic,
                s.partition,
                value(s)
            );
        }
    }
    let topics = stats
        .iter()
        .map(|s| &s.topic)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let _ = writeln!(
        out,
        "# HELP sluice_topics Topics on this broker.\n# TYPE sluice_topics gauge\nsluice_topics {topics}"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
