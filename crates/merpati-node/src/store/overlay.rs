//! A batch's transaction, for both stores: reads see the committed state (any [`View`]) through
//! the batch's own pending writes, and the writes collect here until the whole batch succeeded.
//!
//! The sled store computes a batch this way, under its writer lock, and then commits the
//! collected writes in one sled transaction; the memory store copies them into its maps. sled's
//! transactions offer point reads only, and keeping the outbox's indexes needs "the first entry
//! with this prefix" (a contact's oldest entry), which this overlay answers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::StoreError;
use super::codec::prefix_end;
use super::engine::{Entry, Tree, Tx, View};

/// Pending writes of a transaction: `None` deletes.
pub(crate) type Writes = BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>;

/// A transaction over `base`; see the module documentation.
pub(crate) struct Overlay<'a> {
    base: &'a dyn View,
    writes: RefCell<Writes>,
}

impl<'a> Overlay<'a> {
    /// An empty transaction over the committed state `base`.
    pub(crate) fn new(base: &'a dyn View) -> Self {
        Self { base, writes: RefCell::new(BTreeMap::new()) }
    }

    /// The writes the batch made, in (tree, key) order.
    pub(crate) fn into_writes(self) -> Writes {
        self.writes.into_inner()
    }
}

impl Tx for Overlay<'_> {
    type Error = StoreError;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(write) = self.writes.borrow().get(&(tree, key.to_vec())) {
            return Ok(write.clone());
        }
        self.base.get(tree, key)
    }

    fn insert(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.borrow_mut().insert((tree, key.to_vec()), Some(value));
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.writes.borrow_mut().insert((tree, key.to_vec()), None);
        Ok(())
    }

    fn first(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let writes = self.writes.borrow();
        // The first committed entry the batch has not written: entries it deleted are skipped,
        // and entries it replaced are found among its own writes below. A batch deletes few keys,
        // so this visits few entries.
        let mut committed = None;
        self.base.scan(tree, prefix, false, &mut |key, value| {
            if writes.contains_key(&(tree, key.to_vec())) {
                return Ok(true);
            }
            committed = Some((key.to_vec(), value.to_vec()));
            Ok(false)
        })?;
        let end = match prefix_end(prefix) {
            Some(end) => Bound::Excluded((tree, end)),
            None => Bound::Unbounded,
        };
        let written = writes
            .range((Bound::Included((tree, prefix.to_vec())), end))
            .take_while(|((t, _), _)| *t == tree)
            .find_map(|((_, key), value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (committed, written) {
            (Some(c), Some(w)) => Some(if w.0 < c.0 { w } else { c }),
            (c, w) => c.or(w),
        })
    }

    fn entries(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let writes = self.writes.borrow();
        let mut all = BTreeMap::new();
        self.base.scan(tree, prefix, false, &mut |key, value| {
            if !writes.contains_key(&(tree, key.to_vec())) {
                all.insert(key.to_vec(), value.to_vec());
            }
            Ok(true)
        })?;
        let end = match prefix_end(prefix) {
            Some(end) => Bound::Excluded((tree, end)),
            None => Bound::Unbounded,
        };
        for ((_, key), value) in
            writes.range((Bound::Included((tree, prefix.to_vec())), end)).take_while(|((t, _), _)| *t == tree)
        {
            if let Some(value) = value {
                all.insert(key.clone(), value.clone());
            }
        }
        Ok(all.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::Visit;

    /// A committed state of one tree, as a view.
    struct Base(BTreeMap<Vec<u8>, Vec<u8>>);

    impl View for Base {
        fn get(&self, _tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(key).cloned())
        }

        fn scan(
            &self,
            _tree: Tree,
            prefix: &[u8],
            rev: bool,
            visit: &mut Visit<'_>,
        ) -> Result<(), StoreError> {
            assert!(!rev);
            for (key, value) in self.0.iter().filter(|(k, _)| k.starts_with(prefix)) {
                if !visit(key, value)? {
                    break;
                }
            }
            Ok(())
        }

        fn scan_below(
            &self,
            _tree: Tree,
            _prefix: &[u8],
            _below: &[u8],
            _visit: &mut Visit<'_>,
        ) -> Result<(), StoreError> {
            unreachable!("the overlay never pages")
        }
    }

    #[test]
    fn first_sees_the_batch_through_the_committed_state() {
        let base = Base(
            [
                (b"a1".to_vec(), b"1".to_vec()),
                (b"a3".to_vec(), b"3".to_vec()),
                (b"b1".to_vec(), b"x".to_vec()),
            ]
            .into_iter()
            .collect(),
        );
        let tx = Overlay::new(&base);
        let first = |prefix: &[u8]| tx.first(Tree::OutboxOrder, prefix).unwrap();
        assert_eq!(first(b"a"), Some((b"a1".to_vec(), b"1".to_vec())));
        tx.remove(Tree::OutboxOrder, b"a1").unwrap();
        assert_eq!(first(b"a"), Some((b"a3".to_vec(), b"3".to_vec())));
        tx.insert(Tree::OutboxOrder, b"a2", b"2".to_vec()).unwrap();
        assert_eq!(first(b"a"), Some((b"a2".to_vec(), b"2".to_vec())));
        tx.insert(Tree::OutboxOrder, b"a0", b"0".to_vec()).unwrap();
        let keys: Vec<Vec<u8>> =
            tx.entries(Tree::OutboxOrder, b"a").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"a0".to_vec(), b"a2".to_vec(), b"a3".to_vec()]);
        tx.remove(Tree::OutboxOrder, b"a0").unwrap();
        assert_eq!(first(b"a"), Some((b"a2".to_vec(), b"2".to_vec())));
        tx.insert(Tree::OutboxOrder, b"a3", b"new".to_vec()).unwrap();
        tx.remove(Tree::OutboxOrder, b"a2").unwrap();
        assert_eq!(first(b"a"), Some((b"a3".to_vec(), b"new".to_vec())));
        tx.remove(Tree::OutboxOrder, b"a3").unwrap();
        assert_eq!(first(b"a"), None);
        // Writes in other trees and other prefixes are not this prefix's entries.
        tx.insert(Tree::OutboxHeads, b"a5", b"5".to_vec()).unwrap();
        tx.insert(Tree::OutboxOrder, b"b0", b"0".to_vec()).unwrap();
        assert_eq!(first(b"a"), None);
        assert_eq!(first(b"b"), Some((b"b0".to_vec(), b"0".to_vec())));
        assert_eq!(first(b""), Some((b"b0".to_vec(), b"0".to_vec())));
    }
}
