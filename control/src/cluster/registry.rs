//! The live nodes as this node sees them: a sans-IO view fed with what Redis holds.
//!
//! Every heartbeat the driver reads the node records (`sluice:node:{id}`, each with a TTL) and
//! hands them to [`Registry::observe`], which says which nodes joined and which are gone. A
//! node is gone when its record expired or when it shows a new incarnation (it restarted): in
//! both cases what depended on the old incarnation must be cleaned up, and only that
//! incarnation's ownership may be swept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node publishes about itself, refreshed every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Random per start: a restarted node is a new incarnation.
    pub inc: u64,
    /// `ws://ADDR/api/ws`.
    pub api: String,
    /// The address media is sent to (SDP).
    pub media: String,
    /// `serving` or `draining`.
    pub state: String,
    /// Sessions it owns.
    pub sessions: u64,
}

/// A change in the set of live nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Joined {
        node: String,
        inc: u64,
    },
    /// The node's record expired or its incarnation changed: clean up after `inc`.
    Gone {
        node: String,
        inc: u64,
    },
}

#[derive(Default, Debug)]
pub struct Registry {
    nodes: BTreeMap<String, NodeRecord>,
}

impl Registry {
    /// Takes a full read of the records (`None` for a node whose key is gone) and returns
    /// what changed since the last read, gone nodes first.
    pub fn observe(&mut self, read: Vec<(String, Option<NodeRecord>)>) -> Vec<Change> {
        let mut gone = Vec::new();
        let mut joined = Vec::new();
        let mut seen = BTreeMap::new();
        for (node, record) in read {
            let Some(record) = record else { continue };
            match self.nodes.get(&node) {
                Some(old) if old.inc == record.inc => {}
                Some(old) => {
                    gone.push(Change::Gone {
                        node: node.clone(),
                        inc: old.inc,
                    });
                    joined.push(Change::Joined {
                        node: node.clone(),
                        inc: record.inc,
                    });
                }
                None => joined.push(Change::Joined {
                    node: node.clone(),
                    inc: record.inc,
                }),
            }
            seen.insert(node, record);
        }
        for (node, old) in &self.nodes {
            if !seen.contains_key(node) {
                gone.push(Change::Gone {
                    node: node.clone(),
                    inc: old.inc,
                });
            }
        }
        self.nodes = seen;
        gone.extend(joined);
        gone
    }

    /// The live incarnation of `node`.
    pub fn inc(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).map(|r| r.inc)
    }

    pub fn get(&self, node: &str) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }

    /// Every live node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = (&String, &NodeRecord)> {
        self.nodes.iter()
    }

    /// Forgets every node (this node lost Redis): all of them count as gone.
    pub fn clear(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|(node, r)| Change::Gone { node, inc: r.inc })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(inc: u64) -> NodeRecord {
        NodeRecord {
            inc,
            api: "ws://x/api/ws".into(),
            media: "127.0.0.1".into(),
            state: "serving".into(),
            sessions: 0,
        }
    }

    #[test]
    fn nodes_join_expire_and_restart() {
        let mut r = Registry::default();
        let c = r.observe(vec![("a".into(), Some(rec(1))), ("b".into(), Some(rec(2)))]);
        assert_eq!(
            c,
            vec![
                Change::Joined {
                    node: "a".into(),
                    inc: 1
                },
                Change::Joined {
                    node: "b".into(),
                    inc: 2
                }
            ]
        );
        assert!(
            r.observe(vec![("a".into(), Some(rec(1))), ("b".into(), Some(rec(2)))])
                .is_empty()
        );
        // b's key expired; a restarted with a new incarnation.
        let c = r.observe(vec![("a".into(), Some(rec(7))), ("b".into(), None)]);
        assert_eq!(
            c,
            vec![
                Change::Gone {
                    node: "a".into(),
                    inc: 1
                },
                Change::Gone {
                    node: "b".into(),
                    inc: 2
                },
                Change::Joined {
                    node: "a".into(),
                    inc: 7
                }
            ]
        );
        assert_eq!(r.inc("a"), Some(7));
        assert_eq!(r.inc("b"), None);
        assert_eq!(
            r.clear(),
            vec![Change::Gone {
                node: "a".into(),
                inc: 7
            }]
        );
    }
}
