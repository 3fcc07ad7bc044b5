//! ListGroups: every group with members or committed offsets, with its state.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::s;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let wanted = |state: &str| {
        req.states_filter.is_empty()
            || req
                .states_filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(state))
    };
    let groups = ctx
        .broker
        .describe_groups()
        .into_iter()
        .filter(|d| wanted(d.state.name()))
        .map(|d| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(d.group_id)))
                .with_protocol_type(s(d.protocol_type));
            if version >= 4 {
                listed.with_group_state(s(d.state.name()))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
