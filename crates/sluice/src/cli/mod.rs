//! The command-line client: topic administration, produce and consume over the Kafka protocol.

mod client;
mod configs;
mod consume;
mod dlq;
mod group;
mod group_member;
mod metadata;
mod murmur2;
mod output;
mod produce;
mod template;
mod topic;

use clap::{Args, Subcommand};

/// Options every client subcommand accepts.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address of a broker's Kafka listener.
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Client subcommands; each connects to a running broker.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    Topic {
        /// Connection and output options.
        #[command(flatten)]
        common: CommonArgs,
        /// What to do.
        #[command(subcommand)]
        action: topic::TopicCommand,
    },
    /// List, describe, delete consumer groups and reset their offsets.
    Group {
        /// Connection and output options.
        #[command(flatten)]
        common: CommonArgs,
        /// What to do.
        #[command(subcommand)]
        action: group::GroupCommand,
    },
    /// List, show and re-send messages in consumer groups' dead-letter topics.
    Dlq {
        /// Connection and output options.
        #[command(flatten)]
        common: CommonArgs,
        /// What to do.
        #[command(subcommand)]
        action: dlq::DlqCommand,
    },
    /// Send lines read from standard input as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
}

/// Runs one client subcommand to completion.
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Topic { common, action } => topic::run(&common, action).await,
        Command::Group { common, action } => group::run(&common, action).await,
        Command::Dlq { common, action } => dlq::run(&common, action).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
    }
}

/// Parses `key=value` (the value may itself contain `=` or be empty).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!("`{text}` has an empty key; expected key=value")),
        None => Err(format!("`{text}` has no `=`; expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".to_string(), "1000".to_string()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_key_value("k="), Ok(("k".to_string(), String::new())));
    }

    #[test]
    fn key_value_without_equals_or_key_is_rejected() {
        assert!(parse_key_value("retention.ms").is_err());
        assert!(parse_key_value("=1").is_err());
    }

    /// Mirrors how `main.rs` flattens [`Command`] into the top-level subcommands.
    #[derive(Parser, Debug)]
    struct TestArgs {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn global_options_are_accepted_after_nested_subcommands() {
        let args = TestArgs::try_parse_from([
            "sluice",
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1000",
            "--json",
            "--bootstrap",
            "127.0.0.1:1",
        ])
        .unwrap();
        match args.command {
            Command::Topic { common, action } => {
                assert!(common.json);
                assert_eq!(common.bootstrap, "127.0.0.1:1");
                match action {
                    topic::TopicCommand::Create(create) => {
                        assert_eq!(create.name, "t");
                        assert_eq!(create.partitions, 3);
                        assert_eq!(
                            create.config,
                            vec![("retention.ms".to_string(), "1000".to_string())]
                        );
                    }
                    other => panic!("parsed as {other:?}"),
                }
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn produce_and_consume_parse_their_options() {
        let args = TestArgs::try_parse_from([
            "sluice",
            "produce",
            "t",
            "--key-separator",
            ":",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--header",
            "a=b",
        ])
        .unwrap();
        assert!(matches!(args.command, Command::Produce(_)));
        let args = TestArgs::try_parse_from([
            "sluice",
            "consume",
            "t",
            "--from-beginning",
            "--max-messages",
            "10",
            "--format",
            "%k=%v\\n",
            "--json",
        ])
        .unwrap();
        assert!(matches!(args.command, Command::Consume(_)));
    }
}
