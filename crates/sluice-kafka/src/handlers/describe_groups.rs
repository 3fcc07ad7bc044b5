//! DescribeGroups: state and members of groups.

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::list_groups::STATE_EMPTY;
use super::s;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let known = ctx.broker.list_groups();
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            let described = DescribedGroup::default().with_group_id(g.clone());
            if known.iter().any(|k| k.as_str() == g.0.as_str()) {
                described
                    .with_group_state(s(STATE_EMPTY))
                    .with_protocol_type(s("consumer"))
            } else {
                // Up to v5 an unknown group is described as Dead, without an error.
                described.with_group_state(s("Dead"))
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
