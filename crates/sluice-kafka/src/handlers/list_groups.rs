//! ListGroups: groups the broker knows (today: those with committed offsets,
//! which have no active members).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::s;
use crate::server::Ctx;

/// State of a group without members.
pub(crate) const STATE_EMPTY: &str = "Empty";

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
        .list_groups()
        .into_iter()
        .filter(|_| wanted(STATE_EMPTY))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(g)))
                .with_protocol_type(s("consumer"));
            if version >= 4 {
                listed.with_group_state(s(STATE_EMPTY))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
