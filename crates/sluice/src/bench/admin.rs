//! Benchmark topics: created fresh for each measurement through librdkafka's admin
//! client (so the bench exercises CreateTopics as users do) and deleted afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use super::Flush;

/// A topic that exists for one measurement; [`BenchTopic::delete`] removes it.
pub struct BenchTopic {
    /// The topic's name.
    pub name: String,
    /// Its partition count.
    pub partitions: i32,
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
}

impl BenchTopic {
    /// Creates `sluice-bench-<label>-<pid>-<n>` with the given flush policy.
    pub fn create(
        bootstrap: &str,
        label: &str,
        partitions: i32,
        flush: Flush,
    ) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = format!(
            "sluice-bench-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .context("creating the librdkafka admin client")?;
        // The admin client completes its futures from its own thread; any executor
        // can wait for them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1))
            .set("flush.policy", flush.as_str());
        let results = runtime
            .block_on(admin.create_topics([&topic], &options()))
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            result.map_err(|(topic, code)| anyhow!("creating topic {topic}: {code}"))?;
        }
        Ok(BenchTopic {
            name,
            partitions,
            admin,
            runtime,
        })
    }

    /// Deletes the topic and its data.
    pub fn delete(self) -> anyhow::Result<()> {
        let results = self
            .runtime
            .block_on(self.admin.delete_topics(&[self.name.as_str()], &options()))
            .with_context(|| format!("deleting topic {}", self.name))?;
        for result in results {
            result.map_err(|(topic, code)| anyhow!("deleting topic {topic}: {code}"))?;
        }
        Ok(())
    }
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)))
}
