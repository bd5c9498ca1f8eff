//! Groups of nodes and the policies that pick one node per flow.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::NodeId;
use super::health::{HealthTable, NodeState};

/// How a group picks a node.
///
/// dae's `min_avg10` and `min_moving_avg` rank by an average of past latencies; dae-rs keeps only the last
/// measured latency per node, so both behave as [`Policy::Min`] for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `fixed(N)`: the group's N-th node (from 0), only while it is alive.
    Fixed(usize),
    /// `random`: an alive node chosen by flow hash, so one flow always gets the same node while the set of
    /// alive nodes does not change.
    Random,
    /// `min`, `min_avg10`, `min_moving_avg`: the alive node of lowest last-measured latency; nodes not checked
    /// yet rank after measured ones, in group order.
    Min,
}

/// No node of the group is alive: the caller drops the flow, logs and counts it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("group `{group}` has no alive node")]
pub struct NoAliveNode {
    /// The group's name.
    pub group: String,
}

/// A group: a name, its nodes (indices into the node table) and a policy.
#[derive(Clone, PartialEq, Eq)]
pub struct Group {
    /// The name routing rules use.
    pub name: String,
    /// Members in configuration order; never empty when built from a configuration.
    pub nodes: Vec<NodeId>,
    /// How a node is picked.
    pub policy: Policy,
}

impl Group {
    /// The node for a flow. No allocation and no lock: one relaxed load per member.
    pub fn pick(&self, health: &HealthTable, flow_hash: u64) -> Result<NodeId, NoAliveNode> {
        let alive = |node: &NodeId| matches!(health.state(*node), NodeState::Alive(_));
        let picked = match self.policy {
            Policy::Fixed(index) => self.nodes.get(index).copied().filter(alive),
            Policy::Random => {
                let count = self.nodes.iter().filter(|node| alive(node)).count() as u64;
                (count > 0).then(|| {
                    let nth = (flow_hash % count) as usize;
                    *self.nodes.iter().filter(|node| alive(node)).nth(nth).expect("nth < alive count")
                })
            }
            Policy::Min => self
                .nodes
                .iter()
                .filter_map(|node| match health.state(*node) {
                    NodeState::Alive(latency) => Some((latency.unwrap_or(Duration::MAX), *node)),
                    NodeState::Dead => None,
                })
                // min_by_key keeps the first of equal keys: ties go to group order.
                .min_by_key(|(latency, _)| *latency)
                .map(|(_, node)| node),
        };
        picked.ok_or_else(|| NoAliveNode { group: self.name.clone() })
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("nodes", &self.nodes)
            .field("policy", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::health::CheckOutcome;

    fn group(policy: Policy, nodes: &[u32]) -> Group {
        Group { name: "g".into(), nodes: nodes.iter().map(|&i| NodeId(i)).collect(), policy }
    }

    fn ms(value: u64) -> CheckOutcome {
        CheckOutcome::Alive(Duration::from_millis(value))
    }

    #[test]
    fn fixed_uses_its_node_only_while_alive() {
        let health = HealthTable::new(3);
        let g = group(Policy::Fixed(1), &[0, 2]);
        assert_eq!(g.pick(&health, 7), Ok(NodeId(2)));
        health.record(NodeId(2), CheckOutcome::Dead);
        assert_eq!(g.pick(&health, 7), Err(NoAliveNode { group: "g".into() }));
        assert!(group(Policy::Fixed(5), &[0]).pick(&health, 0).is_err());
    }

    #[test]
    fn random_is_stable_per_flow_and_skips_dead_nodes() {
        let health = HealthTable::new(4);
        let g = group(Policy::Random, &[0, 1, 2, 3]);
        for hash in 0..64 {
            assert_eq!(g.pick(&health, hash), g.pick(&health, hash));
        }
        let spread: std::collections::HashSet<_> = (0..64).map(|hash| g.pick(&health, hash).unwrap()).collect();
        assert_eq!(spread.len(), 4, "flow hashes spread over every alive node");
        health.record(NodeId(1), CheckOutcome::Dead);
        health.record(NodeId(3), CheckOutcome::Dead);
        for hash in 0..64 {
            let node = g.pick(&health, hash).unwrap();
            assert!(node == NodeId(0) || node == NodeId(2), "{node:?}");
        }
    }

    #[test]
    fn min_ranks_measured_before_unknown_and_skips_dead() {
        let health = HealthTable::new(4);
        let g = group(Policy::Min, &[0, 1, 2, 3]);
        assert_eq!(g.pick(&health, 0), Ok(NodeId(0)), "all unknown: group order");
        health.record(NodeId(2), ms(30));
        health.record(NodeId(3), ms(10));
        assert_eq!(g.pick(&health, 0), Ok(NodeId(3)));
        health.record(NodeId(3), CheckOutcome::Dead);
        assert_eq!(g.pick(&health, 0), Ok(NodeId(2)));
        health.record(NodeId(2), CheckOutcome::Skipped);
        assert_eq!(g.pick(&health, 0), Ok(NodeId(2)), "a skipped check keeps the last latency");
    }

    #[test]
    fn group_with_no_alive_node_is_an_error_under_every_policy() {
        let health = HealthTable::new(2);
        health.record(NodeId(0), CheckOutcome::Dead);
        health.record(NodeId(1), CheckOutcome::Dead);
        for policy in [Policy::Fixed(0), Policy::Random, Policy::Min] {
            let error = group(policy, &[0, 1]).pick(&health, 3).unwrap_err();
            assert_eq!(error.to_string(), "group `g` has no alive node");
        }
    }
}
