//! Sluice's HTTP listener: a JSON admin API and Prometheus metrics.
//!
//! - `GET /healthz`: `ok` while the broker serves.
//! - `GET /api/topics`: every topic with its partitions, offsets and sizes.
//! - `GET /api/topics/{name}`: one topic, with its configs.
//! - `GET /api/groups`: consumer groups with their total lag.
//! - `GET /api/groups/{group}`: a group's committed offset, log end and lag per partition.
//! - `GET /metrics`: Prometheus text exposition of partition offsets and sizes, and
//!   consumer group lag.

use std::fmt::Write;
use std::future::Future;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sluice_core::{Broker, GroupDescription, GroupKind, PartitionLag, PartitionStats};
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
        .route("/api/groups", get(list_groups))
        .route("/api/groups/{group}", get(describe_group))
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

/// A Prometheus label value: backslash, quote and newline escaped (group ids are
/// arbitrary client strings; topic names are restricted and need none).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads one gauge's value off a partition.
type Gauge = fn(&PartitionStats) -> String;

#[derive(Serialize)]
struct GroupView {
    group: String,
    state: &'static str,
    /// "classic", "consumer" (KIP-848) or "offsets-only" (no members ever joined).
    protocol: &'static str,
    /// Classic: the assignor the members chose.
    #[serde(skip_serializing_if = "str::is_empty")]
    assignor: String,
    generation: i32,
    members: usize,
    lag: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_details: Option<Vec<MemberView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<Vec<PartitionLag>>,
}

#[derive(Serialize)]
struct MemberView {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

fn group_view(broker: &Broker, d: GroupDescription, detailed: bool) -> GroupView {
    let partitions = broker.group_lag(&d.group_id);
    GroupView {
        lag: partitions.iter().map(|p| p.lag).sum(),
        state: d.state.name(),
        protocol: match d.kind {
            GroupKind::Classic => "classic",
            GroupKind::Consumer => "consumer",
            GroupKind::OffsetsOnly => "offsets-only",
        },
        assignor: d.protocol_name,
        generation: d.generation,
        members: d.members.len(),
        member_details: detailed.then(|| {
            d.members
                .into_iter()
                .map(|m| MemberView {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    host: m.client_host,
                    partitions: m.assigned,
                })
                .collect()
        }),
        partitions: detailed.then_some(partitions),
        group: d.group_id,
    }
}

async fn list_groups(State(broker): State<Broker>) -> Json<Vec<GroupView>> {
    Json(
        broker
            .describe_groups()
            .into_iter()
            .map(|d| group_view(&broker, d, false))
            .collect(),
    )
}

async fn describe_group(State(broker): State<Broker>, Path(group): Path<String>) -> Response {
    match broker.describe_group(&group) {
        Some(d) => Json(group_view(&broker, d, true)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no group {group}\n")).into_response(),
    }
}

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
    let _ = writeln!(
        out,
        "# HELP sluice_group_lag Log end offset minus committed offset.\n# TYPE sluice_group_lag gauge"
    );
    for group in broker.list_groups() {
        for p in broker.group_lag(&group) {
            let _ = writeln!(
                out,
                "sluice_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                label(&group),
                p.topic,
                p.partition,
                p.lag
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{BrokerConfig, CommittedOffset, TopicConfig};
    use sluice_storage::batch::build_batch;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[test]
    fn labels_escape_quotes_backslashes_and_newlines() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[tokio::test]
    async fn groups_report_committed_offsets_and_lag() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path().to_path_buf())).unwrap();
        broker
            .create_topic("t", 1, 1, TopicConfig::default(), false)
            .unwrap();
        let batch = build_batch(&[b"a", b"b", b"c", b"d", b"e"], 1, (-1, -1, -1));
        broker.produce("t", 0, &batch).await.unwrap();
        let committed = CommittedOffset {
            offset: 2,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        broker
            .commit_offsets("g\"1", -1, "", None, vec![("t".into(), 0, committed)])
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, broker, std::future::pending()));
        let (status, body) = get(addr, "/api/groups").await;
        assert_eq!(status, 200);
        let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(groups[0]["group"], "g\"1");
        assert_eq!(groups[0]["lag"], 3);
        let (status, body) = get(addr, "/api/groups/g%221").await;
        assert_eq!(status, 200);
        let group: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(group["partitions"][0]["committed_offset"], 2);
        assert_eq!(group["partitions"][0]["log_end_offset"], 5);
        assert_eq!(get(addr, "/api/groups/none").await.0, 404);
        let (_, metrics) = get(addr, "/metrics").await;
        assert!(
            metrics.contains("sluice_group_lag{group=\"g\\\"1\",topic=\"t\",partition=\"0\"} 3"),
            "{metrics}"
        );
    }
}
