//! Which process tree did this: a process and its descendants (kept after they exit),
//! with the flows each owned.

use super::entities::keep_if_exit_lacks;
use super::{HashMap, HashSet, ProcessTree, TreeNode, MAX_TREE_NODES};
use crate::model::{Attribution, FlowRecord, ProcessRecord, UnixNanos};

/// Every process record of one pod, to build trees from.
#[derive(Default)]
pub struct PodProcesses {
    /// The latest record per (pid, start time); EXIT keeps the last readable exe.
    latest: HashMap<(u32, UnixNanos), ProcessRecord>,
    children: HashMap<(u32, UnixNanos), Vec<(u32, UnixNanos)>>,
}

impl PodProcesses {
    pub fn add(&mut self, p: &ProcessRecord) {
        let key = (p.pid, p.start_time);
        match self.latest.get_mut(&key) {
            Some(known) => {
                let live = std::mem::replace(known, p.clone());
                keep_if_exit_lacks(p, &mut known.exe, live.exe);
                keep_if_exit_lacks(p, &mut known.argv, live.argv);
                keep_if_exit_lacks(p, &mut known.ancestors, live.ancestors);
            }
            None => {
                self.latest.insert(key, p.clone());
                if let Some(parent_start) = p.parent_start_time {
                    self.children
                        .entry((p.ppid, parent_start))
                        .or_default()
                        .push(key);
                }
            }
        }
    }

    /// The process (the latest with this pid when `start_time` is absent) and its
    /// descendants in pre-order, without flows.
    pub fn tree(&self, pid: u32, start_time: Option<UnixNanos>) -> Option<ProcessTree> {
        let root = match start_time {
            Some(start) => (pid, start),
            None => *self
                .latest
                .keys()
                .filter(|(p, _)| *p == pid)
                .max_by_key(|(_, start)| *start)?,
        };
        let process = self.latest.get(&root)?;
        let mut tree = ProcessTree {
            ancestors: process.ancestors.clone(),
            nodes: Vec::new(),
            truncated: false,
        };
        let mut stack = vec![(root, 0u32)];
        let mut visited = HashSet::default();
        while let Some((key, depth)) = stack.pop() {
            if !visited.insert(key) {
                continue;
            }
            if tree.nodes.len() >= MAX_TREE_NODES {
                tree.truncated = true;
                break;
            }
            let Some(p) = self.latest.get(&key) else {
                continue;
            };
            tree.nodes.push(TreeNode {
                process: p.clone(),
                depth,
                flows: Vec::new(),
            });
            let mut children = self.children.get(&key).cloned().unwrap_or_default();
            // Oldest child first in the output: the stack pops the last pushed.
            children.sort_by_key(|(pid, start)| std::cmp::Reverse((*start, *pid)));
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
        Some(tree)
    }
}

/// Attaches flows to the processes of a tree: the last record of each socket, or the last
/// one that names its owner by fd (a socket first announced without it may get it later).
pub struct TreeFlows {
    tree: ProcessTree,
    members: HashSet<(u32, UnixNanos)>,
    last: HashMap<u64, FlowRecord>,
}

impl TreeFlows {
    pub fn new(tree: ProcessTree) -> TreeFlows {
        let members = tree
            .nodes
            .iter()
            .map(|n| (n.process.pid, n.process.start_time))
            .collect();
        TreeFlows {
            tree,
            members,
            last: HashMap::default(),
        }
    }

    pub fn add(&mut self, f: &FlowRecord) {
        let by_fd = f.attribution == Attribution::Fd;
        match self.last.get_mut(&f.cookie) {
            Some(known) if by_fd || known.attribution != Attribution::Fd => *known = f.clone(),
            Some(_) => {}
            None => {
                let member = f
                    .pid
                    .zip(f.process_start_time)
                    .is_some_and(|key| self.members.contains(&key));
                if member {
                    self.last.insert(f.cookie, f.clone());
                }
            }
        }
    }

    pub fn finish(mut self) -> ProcessTree {
        let node_of: HashMap<(u32, UnixNanos), usize> = self
            .tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ((n.process.pid, n.process.start_time), i))
            .collect();
        let mut flows: Vec<FlowRecord> = self.last.into_values().collect();
        flows.sort_by_key(|f| (f.first_seen, f.cookie));
        for f in flows {
            let node = f
                .pid
                .zip(f.process_start_time)
                .and_then(|key| node_of.get(&key));
            if let Some(&node) = node {
                self.tree.nodes[node].flows.push(f);
            }
        }
        self.tree
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::investigate::test_support::{flow, process};
    use crate::model::{Ancestor, FlowPhase, ProcessPhase};

    #[test]
    fn a_tree_holds_descendants_in_pre_order_with_their_flows_even_after_exit() {
        let mut pod = PodProcesses::default();
        let mut sh = process(10, 100, 1, 1, "/bin/sh");
        sh.ancestors = vec![Ancestor {
            pid: 1,
            start_time: 1,
            comm: b"init".to_vec(),
            exe: None,
            argv: Vec::new(),
            exited: false,
            uid: Some(0),
        }];
        pod.add(&sh);
        pod.add(&process(11, 110, 10, 100, "/bin/sh"));
        pod.add(&process(12, 120, 11, 110, "/usr/bin/curl"));
        pod.add(&process(13, 130, 10, 100, "/bin/true"));
        // Pid 11 reused later by an unrelated process: not part of the tree.
        pod.add(&process(11, 999, 1, 1, "/usr/bin/other"));
        // curl exits; its exit record carries no exe, the tree keeps the one it had.
        let mut exit = process(12, 120, 11, 110, "/usr/bin/curl");
        exit.phase = ProcessPhase::Exit;
        exit.exe = None;
        exit.exit_time = Some(500);
        pod.add(&exit);

        let tree = pod.tree(10, None).expect("tree");
        let order: Vec<(u32, u32)> = tree
            .nodes
            .iter()
            .map(|n| (n.process.pid, n.depth))
            .collect();
        assert_eq!(order, vec![(10, 0), (11, 1), (12, 2), (13, 1)]);
        assert_eq!(tree.ancestors.len(), 1);
        let curl = &tree.nodes[2].process;
        assert_eq!(curl.phase, ProcessPhase::Exit);
        assert_eq!(curl.exe.as_deref(), Some(&b"/usr/bin/curl"[..]));

        let mut flows = TreeFlows::new(tree);
        let mut f = flow(1, "203.0.113.7", 443, FlowPhase::Start, 0);
        f.pid = Some(12);
        f.process_start_time = Some(120);
        flows.add(&f);
        f.phase = FlowPhase::End;
        f.bytes_sent = Some(99);
        flows.add(&f);
        let mut stranger = f.clone();
        stranger.cookie = 2;
        stranger.process_start_time = Some(121);
        flows.add(&stranger);
        let tree = flows.finish();
        assert_eq!(
            tree.nodes[2].flows.len(),
            1,
            "one entry per socket, the last record"
        );
        assert_eq!(tree.nodes[2].flows[0].bytes_sent, Some(99));
        assert!(tree.nodes.iter().map(|n| n.flows.len()).sum::<usize>() == 1);

        // The latest pid 11 is the unrelated one; the start time picks the right one.
        assert_eq!(pod.tree(11, None).expect("tree").nodes.len(), 1);
        assert_eq!(pod.tree(11, Some(110)).expect("tree").nodes.len(), 2);
        assert!(pod.tree(77, None).is_none());
    }
}
