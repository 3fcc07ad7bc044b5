//! DescribeCluster: the cluster id, controller and brokers.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterResponse};

use super::s;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx) -> DescribeClusterResponse {
    let node = ctx.broker.node_id();
    DescribeClusterResponse::default()
        .with_cluster_id(s(ctx.broker.cluster_id()))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node))
            .with_host(s(ctx.config.advertised_host.clone()))
            .with_port(ctx.config.advertised_port)])
}
