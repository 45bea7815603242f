//! Client ids: one per connection (and per poller that sends it back), unique in the cluster,
//! which presence lists (docs/protocol.md "Presence"). This node's part is 64 random bits drawn
//! at start, so two nodes never hand out the same id; a counter numbers the node's clients.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A new client id: `<node, 16 hex digits>-<counter>`.
pub(crate) fn next() -> Arc<str> {
    static NODE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let node = NODE.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{node:016x}-{n}"))
}

/// Whether `id` has the form of the ids [`next`] makes (`<16 hex digits>-<digits>`), on any
/// node.
pub(crate) fn is_ours(id: &str) -> bool {
    id.len() <= 40
        && id.split_once('-').is_some_and(|(node, n)| {
            node.len() == 16
                && node.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_share_the_node_part() {
        let (a, b) = (super::next(), super::next());
        assert_ne!(a, b);
        assert_eq!(a.split_once('-').unwrap().0, b.split_once('-').unwrap().0);
        assert_eq!(a.split_once('-').unwrap().0.len(), 16);
        assert!(super::is_ours(&a));
        for bad in [
            "",
            "made-up-7",
            "0123456789abcdef-",
            "0123456789abcdeg-1",
            "0123456789abcdef-1x",
        ] {
            assert!(!super::is_ours(bad), "{bad}");
        }
    }
}
