//! Who in a consumer group holds which partitions of a topic, as the group
//! coordinator describes it: to find partitions that no member holds.
//!
//! Static membership (KIP-345) and cooperative rebalancing (KIP-429) leave
//! such a gap when a member dies between the two rounds of a cooperative
//! rebalance and comes back under its instance id within its session: the
//! coordinator hands the new incarnation what the first round left it and
//! starts no rebalance, and the partitions the first round took away (to
//! be given out in the second round, which the dead member would have
//! started) are held by nobody until something rebalances the group.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::client::{Client, ClientContext};

use crate::error::KafkaIoError;

/// How a group's members share a topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupShares {
    /// The group is stable (no rebalance in progress): the shares are final.
    pub stable: bool,
    /// Per member, the partitions of the topic it holds.
    pub members: Vec<BTreeSet<i32>>,
}

impl GroupShares {
    /// The partitions among `0..partitions` that no member holds.
    pub fn unowned(&self, partitions: i32) -> BTreeSet<i32> {
        (0..partitions).filter(|p| !self.members.iter().any(|m| m.contains(p))).collect()
    }

    /// How many partitions the member holding the fewest holds (0 without members).
    pub fn fewest(&self) -> usize {
        self.members.iter().map(BTreeSet::len).min().unwrap_or(0)
    }
}

/// Describes `group` (a DescribeGroups request through `client`): whether
/// it is stable, and which partitions of `topic` each member holds.
pub fn describe_shares<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<GroupShares, KafkaIoError> {
    let list = client
        .fetch_group_list(Some(group), timeout)
        .map_err(KafkaIoError::kafka(format!("describing the consumer group {group}")))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(GroupShares { stable: false, members: Vec::new() });
    };
    let members = info
        .members()
        .iter()
        .map(|m| {
            assigned(m.assignment().unwrap_or_default(), topic).map_err(|problem| {
                KafkaIoError::GroupDescription { group: group.to_owned(), member: m.id().to_owned(), problem }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GroupShares { stable: info.state().eq_ignore_ascii_case("stable"), members })
}

/// The partitions of `topic` in a member's assignment (the consumer
/// protocol's `ConsumerProtocolAssignment`: a version, then the body). An
/// empty assignment holds nothing.
fn assigned(bytes: &[u8], topic: &str) -> Result<BTreeSet<i32>, String> {
    let (version, mut body) = match bytes {
        [] => return Ok(BTreeSet::new()),
        [a, b, body @ ..] => (i16::from_be_bytes([*a, *b]), body),
        [_] => return Err("an assignment of 1 byte has no version".to_owned()),
    };
    // Newer versions only add fields at the end: read them as the newest known.
    let assignment = ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3))
        .map_err(|e| format!("assignment version {version} does not decode: {e}"))?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .filter(|t| t.topic.as_str() == topic)
        .flat_map(|t| t.partitions.iter().copied())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encoded(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string((*t).to_owned())))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut buf = version.to_be_bytes().to_vec();
        assignment.encode(&mut buf, version.clamp(0, 3)).expect("encodes");
        buf
    }

    #[test]
    fn a_members_assignment_reads_back_its_partitions_of_the_topic_only() {
        let bytes = encoded(1, &[("clicks", &[3, 0]), ("other", &[1])]);
        assert_eq!(assigned(&bytes, "clicks").expect("decodes"), BTreeSet::from([0, 3]));
        assert_eq!(assigned(&bytes, "orders").expect("decodes"), BTreeSet::new());
        assert_eq!(assigned(&[], "clicks").expect("decodes"), BTreeSet::new(), "no assignment yet");
        assert_eq!(
            assigned(&encoded(7, &[("clicks", &[2])]), "clicks").expect("decodes"),
            BTreeSet::from([2])
        );
        assert!(assigned(&bytes[..bytes.len() - 3], "clicks").is_err(), "a cut assignment is an error");
    }

    #[test]
    fn partitions_no_member_holds_are_unowned() {
        let shares = GroupShares {
            stable: true,
            members: vec![BTreeSet::from([3, 4, 5]), BTreeSet::new(), BTreeSet::from([0])],
        };
        assert_eq!(shares.unowned(6), BTreeSet::from([1, 2]));
        assert_eq!(shares.fewest(), 0);
        assert_eq!(GroupShares { stable: true, members: Vec::new() }.unowned(2), BTreeSet::from([0, 1]));
    }
}
