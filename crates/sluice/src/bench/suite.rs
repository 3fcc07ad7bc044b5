//! The published matrix: message sizes, acks, flush policies, partition counts and
//! producer counts for throughput; offered rates for latency; and the targets
//! checked against the figures.

use std::time::Duration;

use super::report::{BenchEnv, BenchResult, Report, Target};
use super::{consume, latency, produce, Acks, Flush, LatencySettings, ProduceSettings};

fn settings(
    size: usize,
    acks: Acks,
    flush: Flush,
    partitions: i32,
    producers: usize,
) -> ProduceSettings {
    ProduceSettings {
        size,
        acks,
        flush,
        partitions,
        producers,
        linger_ms: 5,
    }
}

/// Writes back what earlier scenarios left dirty and lets the machine settle, so
/// one measurement's writeback does not land in the next one's figures.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs(1));
}

/// Runs the matrix (or its short form) and adds the results and target checks.
pub fn run(env: &BenchEnv, quick: bool, report: &mut Report) -> anyhow::Result<()> {
    use Acks::{All, One};
    use Flush::{Always, Interval, Os};
    let baseline = settings(1024, One, Os, 12, 1);
    // A discarded first run: connections, the broker's allocator and the page cache
    // reach their working state (on a VM, first-touched memory is slow).
    let warm_up = BenchEnv {
        duration: (env.duration / 2).min(Duration::from_secs(5)),
        ..env.clone()
    };
    produce::measure(&warm_up, &baseline)?;
    settle();
    for result in consume::measure(env, &baseline, &[1, 2], !quick)? {
        report.push(result);
    }
    let mut cases = vec![
        settings(1024, One, Os, 12, 4),
        settings(1024, One, Always, 12, 4),
        settings(1024, One, Os, 1000, 1),
    ];
    if !quick {
        cases.extend([
            settings(100, One, Os, 12, 1),
            settings(16 * 1024, One, Os, 12, 1),
            settings(1024, All, Os, 12, 1),
            settings(1024, One, Os, 1, 1),
            settings(1024, One, Interval, 12, 4),
            settings(1024, One, Always, 12, 1),
            settings(1024, One, Always, 1000, 4),
        ]);
    }
    for case in &cases {
        settle();
        report.push(produce::measure(env, case)?);
    }
    let rates = if quick {
        vec![1_000, 10_000]
    } else {
        vec![1_000, 10_000, 50_000]
    };
    for flush in [Os, Always] {
        let settings = LatencySettings {
            rates: rates.clone(),
            size: 1024,
            flush,
            partitions: 12,
            acks: One,
        };
        settle();
        for result in latency::measure(env, &settings)? {
            report.push(result);
        }
    }
    report.targets = targets(&report.results);
    for target in &report.targets {
        eprintln!(
            "target {}: {} {:.3} (goal {})",
            if target.met { "met" } else { "MISSED" },
            target.name,
            target.figure,
            target.goal
        );
    }
    Ok(())
}

/// The targets, checked against the figures of this run.
fn targets(results: &[BenchResult]) -> Vec<Target> {
    let find = |name: &str| results.iter().find(|r| r.name == name);
    let figure = |name: &str, key: &str| find(name).and_then(|r| r.figures.get(key).copied());
    let share = |name: &str, key: &str| find(name).and_then(|r| r.of_limit.get(key).copied());
    let mut targets = Vec::new();
    let mut check = |name: &str, figure: Option<f64>, goal: &str, met: fn(f64) -> bool| {
        if let Some(figure) = figure {
            targets.push(Target {
                name: name.to_string(),
                figure,
                goal: goal.to_string(),
                met: met(figure),
            });
        }
    };
    check(
        "produce 1KiB acks=1 flush=os p=12, share of loopback TCP",
        share("produce 1KiB acks=1 flush=os p=12 x1", "loopback_tcp"),
        ">= 0.5",
        |f| f >= 0.5,
    );
    check(
        "consume from page cache, share of loopback TCP",
        share(
            "consume warm 1KiB acks=1 flush=os p=12 x1 c=2",
            "loopback_tcp",
        ),
        ">= 0.7",
        |f| f >= 0.7,
    );
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(1e-9));
    check(
        "flush=always / flush=os throughput, 4 producers, p=12",
        ratio(
            figure("produce 1KiB acks=1 flush=always p=12 x4", "mb_per_s"),
            figure("produce 1KiB acks=1 flush=os p=12 x4", "mb_per_s"),
        ),
        ">= 0.5",
        |f| f >= 0.5,
    );
    check(
        "p99 ms at 10000/s, flush=os",
        figure("latency 10000/s 1KiB acks=1 flush=os p=12", "p99_ms"),
        "< 2",
        |f| f < 2.0,
    );
    check(
        "p99 ms at 10000/s, flush=always",
        figure("latency 10000/s 1KiB acks=1 flush=always p=12", "p99_ms"),
        "< 5",
        |f| f < 5.0,
    );
    check(
        "p=1000 / p=12 produce throughput",
        ratio(
            figure("produce 1KiB acks=1 flush=os p=1000 x1", "mb_per_s"),
            figure("produce 1KiB acks=1 flush=os p=12 x1", "mb_per_s"),
        ),
        ">= 0.7",
        |f| f >= 0.7,
    );
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        name: &str,
        figures: &[(&'static str, f64)],
        shares: &[(&'static str, f64)],
    ) -> BenchResult {
        let mut r = BenchResult::new("produce", name.to_string(), ());
        r.figures.extend(figures.iter().copied());
        r.of_limit.extend(shares.iter().copied());
        r
    }

    #[test]
    fn targets_compare_the_named_results() {
        let results = vec![
            result(
                "produce 1KiB acks=1 flush=os p=12 x1",
                &[("mb_per_s", 100.0)],
                &[("loopback_tcp", 0.6)],
            ),
            result(
                "produce 1KiB acks=1 flush=os p=1000 x1",
                &[("mb_per_s", 50.0)],
                &[],
            ),
            result(
                "produce 1KiB acks=1 flush=os p=12 x4",
                &[("mb_per_s", 200.0)],
                &[],
            ),
            result(
                "produce 1KiB acks=1 flush=always p=12 x4",
                &[("mb_per_s", 150.0)],
                &[],
            ),
        ];
        let targets = targets(&results);
        assert_eq!(targets.len(), 3, "{targets:?}");
        assert!(targets[0].met && (targets[0].figure - 0.6).abs() < 1e-9);
        assert!(targets[1].met && (targets[1].figure - 0.75).abs() < 1e-9);
        assert!(!targets[2].met && (targets[2].figure - 0.5).abs() < 1e-9);
    }
}
