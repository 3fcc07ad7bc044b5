//! DescribeGroups: state, protocol and members (with their assignments) of groups.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use sluice_core::{GroupKind, GroupState};

use super::s;
use crate::consumer_protocol::encode_assignment;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            let described = DescribedGroup::default().with_group_id(g.clone());
            let Some(d) = ctx.broker.describe_group(g.0.as_str()) else {
                // Up to v5 an unknown group is described as Dead, without an error.
                return described.with_group_state(s(GroupState::Dead.name()));
            };
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    // Members the broker assigned carry no consumer-protocol bytes;
                    // show their partitions in that format so tools can read them.
                    let assignment = if d.kind == GroupKind::Consumer {
                        encode_assignment(&m.assigned)
                    } else {
                        m.assignment.into()
                    };
                    DescribedGroupMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(m.instance_id.map(s))
                        .with_client_id(s(m.client_id))
                        .with_client_host(s(m.client_host))
                        .with_member_metadata(m.metadata.into())
                        .with_member_assignment(assignment)
                })
                .collect();
            described
                .with_group_state(s(d.state.name()))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol_name))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
