//! Server-side assignors of the consumer group protocol (KIP-848): `uniform` and
//! `range`. Both are pure functions of the members' subscriptions, the partition
//! counts and (for `uniform`) the previous target, so the same inputs always give
//! the same assignment.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition as the assignors see it.
pub type TopicPartition = (String, i32);

/// Names of the assignors this broker has; the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// What an assignor needs to know about one member.
#[derive(Debug, Clone)]
pub struct AssignorMember<'a> {
    /// Topics the member subscribes to that exist.
    pub topics: &'a BTreeSet<String>,
    /// The member's partitions in the previous target assignment.
    pub previous: &'a BTreeSet<TopicPartition>,
}

/// Runs the named assignor. `partitions` gives the partition count of every
/// subscribed topic that exists. Every partition of a subscribed topic goes to
/// exactly one member that subscribes to it.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, AssignorMember<'_>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    match assignor {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

/// Per topic, the subscribed members in member-id order get contiguous ranges;
/// the first `count % members` get one partition more.
fn range(
    members: &BTreeMap<String, AssignorMember<'_>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let set = out.entry((*member).clone()).or_default();
            for p in next..next + take {
                set.insert((topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

/// Spreads all partitions evenly over the members, keeping each member's previous
/// partitions where that does not unbalance the result (sticky), so a rebalance
/// moves as few partitions as it can.
fn uniform(
    members: &BTreeMap<String, AssignorMember<'_>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let all: Vec<TopicPartition> = partitions
        .iter()
        .filter(|(t, _)| members.values().any(|m| m.topics.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    // Upper bound per member; with different subscriptions it is only a target.
    let quota = all.len().div_ceil(members.len());
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for (id, m) in members {
        let mine = out.entry(id.clone()).or_default();
        for tp in m.previous {
            if mine.len() >= quota {
                break;
            }
            let exists = partitions
                .get(&tp.0)
                .is_some_and(|&n| tp.1 >= 0 && tp.1 < n);
            if exists && m.topics.contains(&tp.0) && taken.insert(tp.clone()) {
                mine.insert(tp.clone());
            }
        }
    }
    // The rest go, one by one, to the least loaded member subscribed to the topic
    // (ties by member id); a heap per topic keeps this O(P log M).
    let mut loads: BTreeMap<
        &str,
        std::collections::BinaryHeap<std::cmp::Reverse<(usize, &String)>>,
    > = BTreeMap::new();
    for tp in &all {
        if taken.contains(tp) {
            continue;
        }
        let heap = loads.entry(tp.0.as_str()).or_insert_with(|| {
            members
                .iter()
                .filter(|(_, m)| m.topics.contains(&tp.0))
                .map(|(id, _)| std::cmp::Reverse((out[id].len(), id)))
                .collect()
        });
        // Entries go stale when another topic's heap gave the member partitions.
        while let Some(std::cmp::Reverse((load, id))) = heap.pop() {
            let current = out[id].len();
            if current != load {
                heap.push(std::cmp::Reverse((current, id)));
                continue;
            }
            if let Some(set) = out.get_mut(id) {
                set.insert(tp.clone());
            }
            heap.push(std::cmp::Reverse((current + 1, id)));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members<'a>(
        specs: &'a [(&str, BTreeSet<String>, BTreeSet<TopicPartition>)],
    ) -> BTreeMap<String, AssignorMember<'a>> {
        specs
            .iter()
            .map(|(id, topics, previous)| (id.to_string(), AssignorMember { topics, previous }))
            .collect()
    }

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn check_complete_and_disjoint(
        out: &BTreeMap<String, BTreeSet<TopicPartition>>,
        partitions: &BTreeMap<String, i32>,
    ) {
        let mut seen = BTreeSet::new();
        for set in out.values() {
            for tp in set {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        let total: i32 = partitions.values().sum();
        assert_eq!(seen.len(), total as usize);
    }

    #[test]
    fn uniform_balances_and_keeps_previous_partitions() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 6)].into();
        let none = BTreeSet::new();
        let specs = [
            ("a", topics(&["t"]), none.clone()),
            ("b", topics(&["t"]), none.clone()),
        ];
        let first = assign("uniform", &members(&specs), &parts);
        check_complete_and_disjoint(&first, &parts);
        assert_eq!(first["a"].len(), 3);
        // A third member joins: a and b each give up one partition, keep the rest.
        let specs = [
            ("a", topics(&["t"]), first["a"].clone()),
            ("b", topics(&["t"]), first["b"].clone()),
            ("c", topics(&["t"]), none.clone()),
        ];
        let second = assign("uniform", &members(&specs), &parts);
        check_complete_and_disjoint(&second, &parts);
        for m in ["a", "b", "c"] {
            assert_eq!(second[m].len(), 2, "{m}");
        }
        assert!(second["a"].is_subset(&first["a"]));
        assert!(second["b"].is_subset(&first["b"]));
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let parts: BTreeMap<String, i32> = [("x".to_string(), 3), ("y".to_string(), 3)].into();
        let none = BTreeSet::new();
        let specs = [
            ("a", topics(&["x"]), none.clone()),
            ("b", topics(&["x", "y"]), none.clone()),
        ];
        let out = assign("uniform", &members(&specs), &parts);
        check_complete_and_disjoint(&out, &parts);
        assert!(out["a"].iter().all(|(t, _)| t == "x"));
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 7)].into();
        let none = BTreeSet::new();
        let specs = [
            ("a", topics(&["t"]), none.clone()),
            ("b", topics(&["t"]), none.clone()),
            ("c", topics(&["t"]), none.clone()),
        ];
        let out = assign("range", &members(&specs), &parts);
        check_complete_and_disjoint(&out, &parts);
        let ps = |m: &str| out[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        assert_eq!(ps("a"), vec![0, 1, 2]);
        assert_eq!(ps("b"), vec![3, 4]);
        assert_eq!(ps("c"), vec![5, 6]);
    }

    #[test]
    fn unsubscribed_topics_are_not_assigned() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 2), ("u".to_string(), 2)].into();
        let none = BTreeSet::new();
        let specs = [("a", topics(&["t"]), none)];
        for name in ASSIGNORS {
            let out = assign(name, &members(&specs), &parts);
            assert_eq!(out["a"].len(), 2, "{name}");
        }
    }
}
