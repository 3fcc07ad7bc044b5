//! `sluice serve` as a child process: start-up with embedded defaults, a forged
//! request that once could abort the process, and a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

struct Server {
    child: Child,
    port: u16,
    /// The broker's stderr so far, read by `log_reader`.
    log: Arc<Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Everything the broker logged, once it has exited.
    fn final_log(&mut self) -> String {
        if let Some(reader) = self.log_reader.take() {
            reader.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

/// Starts a broker on ports the system picks (a port chosen beforehand could be
/// taken meanwhile by another test's listener) and learns its Kafka port from
/// its "listening" log line.
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--kafka-listen")
        .arg("127.0.0.1:0")
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .arg("--grpc-listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (port_tx, port_rx) = mpsc::channel();
    let log_reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("kafka_listen=127.0.0.1:"))
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let port = match port_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => port,
        Err(_) => panic!(
            "broker did not start listening; log:\n{}",
            log.lock().unwrap()
        ),
    };
    Server {
        child,
        port,
        log,
        log_reader: Some(log_reader),
        _dir: dir,
    }
}

/// ApiVersions v0 round trip; true when the broker answered.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 9, 0, 0];
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok() && head[4..8] == [0, 0, 0, 9]
}

#[test]
fn forged_array_count_closes_the_connection_and_the_broker_keeps_serving() {
    let server = start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Metadata v1 claiming 2^31-1 topics in a 14-byte frame.
    let frame = [
        0u8, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0, 1, b'x', 0x7f, 0xff, 0xff, 0xff,
    ];
    let frame = {
        let mut f = frame.to_vec();
        let len = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    };
    s.write_all(&frame).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "connection closed");
    assert!(answers(server.port));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = start();
    assert!(answers(server.port));
    let pid = server.child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let log = server.final_log();
    assert!(log.contains("sluice broker listening"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
}
