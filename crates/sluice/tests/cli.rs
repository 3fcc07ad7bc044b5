//! End-to-end tests of the command-line client against a real `sluice serve` child process.
//!
//! Every test starts its own broker on a free port with its own data directory, drives it with
//! `sluice topic|produce|consume`, and kills it when done. Timeouts only bound hangs.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound on the broker accepting connections after start.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on any one CLI invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A `sluice serve` child process, killed on drop.
struct Broker {
    child: Child,
    addr: String,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a port the system picks.
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with extra `sluice serve` flags.
    fn start_with(extra: &[&str]) -> Broker {
        Broker::try_start(extra).unwrap_or_else(|failure| panic!("{failure}"))
    }

    fn try_start(extra: &[&str]) -> Result<Broker, String> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        // The system picks the port and the broker logs it: a port picked here
        // beforehand could be taken meanwhile by another test's listener.
        let addr = String::from("127.0.0.1:0");
        let log_path = data_dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("broker log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--data-dir"])
            .arg(data_dir.path().join("data"))
            .args(["--kafka-listen", &addr, "--http-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice serve");
        let mut broker = Broker {
            child,
            addr,
            _data_dir: data_dir,
        };
        broker.wait_until_listening(&log_path)?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self, log_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            let listening = log
                .lines()
                .filter(|l| l.contains("sluice broker listening"))
                .flat_map(str::split_whitespace)
                .find_map(|w| w.strip_prefix("kafka_listen="));
            if let Some(addr) = listening {
                self.addr = addr.to_string();
                if TcpStream::connect(&self.addr).is_ok() {
                    return Ok(());
                }
            }
            let exited = self.child.try_wait().expect("try_wait on broker");
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                return Err(format!(
                    "sluice serve never accepted connections on {} ({}); its stderr:\n{log}",
                    self.addr,
                    match exited {
                        Some(status) => format!("exited with {status}"),
                        None => format!("not listening after {BROKER_START_TIMEOUT:?}"),
                    }
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sluice ARGS --bootstrap ADDR` with `stdin` piped in.
    fn cli(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--bootstrap", &self.addr]);
        run_with_timeout(&all, stdin)
    }

    /// Runs a CLI command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, b"")
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = self.cli(args, stdin);
        assert!(
            output.status.success(),
            "sluice {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            output.stdout,
            output.stderr
        );
        output.stdout
    }

    /// Runs a CLI command with `--json` that must succeed and parses its single JSON line.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let stdout = self.ok(&all);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("sluice {all:?} printed invalid JSON ({e}):\n{stdout}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the sluice binary, feeding `stdin`, killing it after [`COMMAND_TIMEOUT`].
fn run_with_timeout(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut child_stdin = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || {
        // The child may exit without reading everything; that is its business.
        let _ = child_stdin.write_all(&input);
    });
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let stdout_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buf);
        buf
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr_reader.join().unwrap_or_default();
            panic!(
                "sluice {args:?} did not finish within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn topic_names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("topic list is an array")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn created_topic_appears_in_topic_list() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "orders", "--partitions", "2"]);
    let list = broker.json(&["topic", "list"]);
    let entry = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap_or_else(|| panic!("orders missing from {list}"));
    assert_eq!(entry["partitions"], 2);
}

#[test]
fn describe_shows_partitions_offsets_and_configs() {
    let broker = Broker::start();
    broker.ok(&[
        "topic",
        "create",
        "described",
        "--partitions",
        "2",
        "--config",
        "retention.ms=3600000",
    ]);
    let described = broker.json(&["topic", "describe", "described"]);
    assert_eq!(described["name"], "described");
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i as u64);
        assert_eq!(p["log_start_offset"], 0);
        assert_eq!(p["log_end_offset"], 0);
        assert!(p["leader"].is_i64(), "leader in {p}");
        assert!(p["replicas"].is_array() && p["isr"].is_array(), "{p}");
    }
    assert_eq!(described["configs"]["retention.ms"], "3600000");
}

#[test]
fn alter_partitions_grows_the_topic() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "growing"]);
    broker.ok(&["topic", "alter", "growing", "--partitions", "3"]);
    let described = broker.json(&["topic", "describe", "growing"]);
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));
}

#[test]
fn alter_config_is_visible_in_describe() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "tuned"]);
    broker.ok(&["topic", "alter", "tuned", "--config", "retention.ms=1000"]);
    let described = broker.json(&["topic", "describe", "tuned"]);
    assert_eq!(described["configs"]["retention.ms"], "1000");
}

#[test]
fn creating_an_existing_topic_fails_with_topic_already_exists() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "twice"]);
    let output = broker.cli(&["topic", "create", "twice"], b"");
    assert!(!output.status.success(), "second create succeeded");
    assert!(
        output.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "stderr: {}",
        output.stderr
    );
}

#[test]
fn deleted_topic_disappears_from_topic_list() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "doomed"]);
    broker.ok(&["topic", "create", "kept"]);
    broker.ok(&["topic", "delete", "doomed"]);
    let names = topic_names(&broker.json(&["topic", "list"]));
    assert!(!names.contains(&"doomed".to_string()), "{names:?}");
    assert!(names.contains(&"kept".to_string()), "{names:?}");
}

#[test]
fn produce_then_consume_round_trips_keys_and_values() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "events", "--partitions", "3"]);
    let mut input = String::new();
    for i in 0..1000 {
        input.push_str(&format!("key-{}:value-{i}\n", i % 17));
    }
    let summary = broker.ok_with_stdin(
        &["produce", "events", "--key-separator", ":", "--json"],
        input.as_bytes(),
    );
    let summary: Value = serde_json::from_str(summary.trim()).expect("summary JSON");
    assert_eq!(summary["records"], 1000);

    let stdout = broker.ok(&[
        "consume",
        "events",
        "--from-beginning",
        "--max-messages",
        "1000",
        "--json",
    ]);
    let records: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("record JSON"))
        .collect();
    assert_eq!(records.len(), 1000);

    // Every line came back once, with its key.
    let mut seen: HashMap<i64, (String, i64, i64)> = HashMap::new();
    for record in &records {
        let value = record["value"].as_str().expect("value");
        let i: i64 = value
            .strip_prefix("value-")
            .and_then(|n| n.parse().ok())
            .expect("value-N");
        assert_eq!(record["key"], format!("key-{}", i % 17), "{record}");
        assert_eq!(record["topic"], "events");
        let partition = record["partition"].as_i64().expect("partition");
        let offset = record["offset"].as_i64().expect("offset");
        assert!(seen
            .insert(i, (value.to_string(), partition, offset))
            .is_none());
    }
    assert_eq!(seen.len(), 1000);

    // Within a partition, offsets grow in input order, and a key stays on one partition.
    let mut by_partition: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut partition_of_key: HashMap<i64, i64> = HashMap::new();
    for (i, (_, partition, offset)) in &seen {
        by_partition
            .entry(*partition)
            .or_default()
            .push((*offset, *i));
        let previous = partition_of_key.insert(i % 17, *partition);
        assert!(
            previous.is_none_or(|p| p == *partition),
            "key-{} split",
            i % 17
        );
    }
    for (partition, mut entries) in by_partition {
        entries.sort();
        let inputs: Vec<i64> = entries.iter().map(|(_, i)| *i).collect();
        let mut sorted = inputs.clone();
        sorted.sort();
        assert_eq!(inputs, sorted, "partition {partition} out of input order");
    }
    // The consumer printed each partition's records in offset order.
    let mut last_offset: HashMap<i64, i64> = HashMap::new();
    for record in &records {
        let partition = record["partition"].as_i64().expect("partition");
        let offset = record["offset"].as_i64().expect("offset");
        if let Some(previous) = last_offset.insert(partition, offset) {
            assert!(
                offset > previous,
                "partition {partition}: {offset} after {previous}"
            );
        }
    }
}

#[test]
fn consume_format_template_renders_fields() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "formatted"]);
    broker.ok_with_stdin(
        &[
            "produce",
            "formatted",
            "--key-separator",
            "=",
            "--header",
            "src=test",
            "--compression",
            "gzip",
        ],
        b"a=1\nb=2\n",
    );
    let stdout = broker.ok(&[
        "consume",
        "formatted",
        "--from-beginning",
        "--max-messages",
        "2",
        "--format",
        "%T %p %o %k=%v [%h]\\n",
    ]);
    assert_eq!(
        stdout,
        "formatted 0 0 a=1 [src=test]\nformatted 0 1 b=2 [src=test]\n"
    );
}

#[test]
fn consume_stops_after_timeout_without_new_data() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "quiet"]);
    broker.ok_with_stdin(&["produce", "quiet", "--partition", "0"], b"only\n");
    let stdout = broker.ok(&[
        "consume",
        "quiet",
        "--from-beginning",
        "--timeout-ms",
        "1000",
    ]);
    assert_eq!(stdout, "only\n");
}

#[test]
fn consume_from_an_offset_skips_earlier_records() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "offsets"]);
    broker.ok_with_stdin(&["produce", "offsets"], b"r0\nr1\nr2\nr3\n");
    let stdout = broker.ok(&[
        "consume",
        "offsets",
        "--partition",
        "0",
        "--offset",
        "2",
        "--max-messages",
        "2",
        "--format",
        "%o:%v\\n",
    ]);
    assert_eq!(stdout, "2:r2\n3:r3\n");
}

#[test]
fn producing_to_a_missing_topic_creates_it_when_the_broker_auto_creates() {
    let broker = Broker::start();
    let output = broker.cli(&["produce", "fresh"], b"x\ny\n");
    assert!(output.status.success(), "stderr: {}", output.stderr);
    let stdout = broker.ok(&[
        "consume",
        "fresh",
        "--from-beginning",
        "--max-messages",
        "2",
    ]);
    assert_eq!(stdout, "x\ny\n");
}

#[test]
fn producing_to_a_missing_topic_fails_by_name() {
    let broker = Broker::start_with(&["--auto-create-topics", "false"]);
    let output = broker.cli(&["produce", "nowhere"], b"x\n");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "stderr: {}",
        output.stderr
    );
}

#[test]
fn group_reset_describe_and_delete_work_on_committed_offsets() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "gt", "--partitions", "2"]);
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    let output = broker.cli(
        &["produce", "gt", "--key-separator", ":", "--partition", "0"],
        lines.as_bytes(),
    );
    assert!(output.status.success(), "stderr: {}", output.stderr);
    broker.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt",
        "--to-offset",
        "10",
    ]);
    let described = broker.json(&["group", "describe", "g"]);
    assert_eq!(described["state"], "Empty");
    let p0 = &described["partitions"][0];
    assert_eq!(
        (
            p0["committed_offset"].as_i64(),
            p0["log_end_offset"].as_i64()
        ),
        (Some(10), Some(40))
    );
    assert_eq!(p0["lag"].as_i64(), Some(30));
    // Partition 1 is empty: clamped to 0.
    assert_eq!(
        described["partitions"][1]["committed_offset"].as_i64(),
        Some(0)
    );
    assert_eq!(described["lag"].as_i64(), Some(30));
    broker.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt",
        "--shift-by",
        "-4",
    ]);
    let described = broker.json(&["group", "describe", "g"]);
    assert_eq!(
        described["partitions"][0]["committed_offset"].as_i64(),
        Some(6)
    );
    broker.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt",
        "--to-latest",
    ]);
    let described = broker.json(&["group", "describe", "g"]);
    assert_eq!(described["lag"].as_i64(), Some(0));
    let listed = broker.ok(&["group", "list", "--json"]);
    assert!(listed.contains("\"group\":\"g\""), "{listed}");
    broker.ok(&["group", "delete", "g"]);
    let output = broker.cli(&["group", "delete", "g"], b"");
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("GROUP_ID_NOT_FOUND"),
        "stderr: {}",
        output.stderr
    );
}

#[test]
fn consume_with_a_group_commits_and_the_next_run_resumes_after_it() {
    let broker = Broker::start();
    broker.ok(&["topic", "create", "gc", "--partitions", "3"]);
    let first: String = (0..30).map(|i| format!("a{i}\n")).collect();
    let output = broker.cli(&["produce", "gc"], first.as_bytes());
    assert!(output.status.success(), "stderr: {}", output.stderr);
    let read = broker.ok(&[
        "consume",
        "gc",
        "--group",
        "cg",
        "--from-beginning",
        "--timeout-ms",
        "3000",
    ]);
    let mut got: Vec<&str> = read.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // Everything printed was committed; the member left, so the group is empty.
    let described = broker.json(&["group", "describe", "cg"]);
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["lag"].as_i64(), Some(0));
    let second: String = (0..6).map(|i| format!("b{i}\n")).collect();
    let output = broker.cli(&["produce", "gc"], second.as_bytes());
    assert!(output.status.success(), "stderr: {}", output.stderr);
    // The next member starts at the committed offsets: only the new records.
    let read = broker.ok(&["consume", "gc", "--group", "cg", "--timeout-ms", "3000"]);
    let mut got: Vec<&str> = read.lines().collect();
    got.sort();
    assert_eq!(got, vec!["b0", "b1", "b2", "b3", "b4", "b5"]);
    // Resetting offsets of the now empty group works and shows up as lag.
    broker.ok(&[
        "group",
        "reset-offsets",
        "cg",
        "--topic",
        "gc",
        "--to-earliest",
    ]);
    let described = broker.json(&["group", "describe", "cg"]);
    assert_eq!(described["lag"].as_i64(), Some(36));
}

#[test]
fn bench_measures_produce_consume_and_latency_and_removes_its_topics() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"loopback_tcp_mb_s": 1000.0, "disk_seq_write_mb_s": 500.0,
            "disk_seq_read_mb_s": 800.0, "fsync_per_s": 300.0}"#,
    )
    .expect("write limits");
    let markdown = dir.path().join("results.md");
    let pid = broker.child.id().to_string();
    let common = [
        "bench",
        "--bootstrap",
        broker.addr.as_str(),
        "--seconds",
        "1",
        "--no-progress",
        "--broker-pid",
        pid.as_str(),
        "--limits",
        limits.to_str().expect("utf-8 path"),
    ];

    let mut args = common.to_vec();
    let markdown_arg = markdown.to_str().expect("utf-8 path");
    args.extend([
        "--markdown",
        markdown_arg,
        "consume",
        "--partitions",
        "3",
        "--size",
        "100",
        "--consumers",
        "1,2",
    ]);
    let out = run_with_timeout(&args, b"");
    assert!(out.status.success(), "bench consume failed: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("bench prints JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{results:?}");
    let produced = results[0]["figures"]["messages"]
        .as_f64()
        .expect("produced");
    assert!(produced > 0.0, "{results:?}");
    assert_eq!(results[0]["figures"]["failed"].as_f64(), Some(0.0));
    assert!(
        results[0]["of_limit"]["loopback_tcp"]
            .as_f64()
            .expect("share")
            > 0.0
    );
    assert!(
        results[0]["broker"]["rss_mib"]
            .as_f64()
            .expect("broker rss")
            > 0.0
    );
    for read in &results[1..] {
        // Every acknowledged message is read back, whatever the consumer count.
        assert_eq!(
            read["figures"]["messages"].as_f64(),
            Some(produced),
            "{read}"
        );
        assert_eq!(
            read["figures"]["mb_per_s"].as_f64().map(|v| v > 0.0),
            Some(true)
        );
    }
    assert_eq!(results[2]["settings"]["consumers"].as_u64(), Some(2));
    let table = std::fs::read_to_string(&markdown).expect("markdown written");
    assert!(
        table.contains("| consume warm 100B acks=1 flush=os p=3 x1 c=2 |"),
        "{table}"
    );

    let mut args = common.to_vec();
    args.extend(["latency", "--rates", "300", "--partitions", "2"]);
    let out = run_with_timeout(&args, b"");
    assert!(out.status.success(), "bench latency failed: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("bench prints JSON");
    let latency = &report["results"][0]["figures"];
    let sent = latency["sent"].as_f64().expect("sent");
    assert!(sent >= 100.0, "{latency}");
    assert_eq!(latency["received"].as_f64(), Some(sent), "{latency}");
    let (p50, p99, max) = (
        latency["p50_ms"].as_f64().expect("p50"),
        latency["p99_ms"].as_f64().expect("p99"),
        latency["max_ms"].as_f64().expect("max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");

    let out = run_with_timeout(
        &["topic", "list", "--json", "--bootstrap", &broker.addr],
        b"",
    );
    assert!(out.status.success(), "{}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).expect("topic list JSON");
    let left: Vec<_> = topic_names(&list)
        .into_iter()
        .filter(|t| t.starts_with("sluice-bench-"))
        .collect();
    assert!(left.is_empty(), "bench topics left behind: {left:?}");
}
