//! Per-key reduction of a batch, for SQL sinks: each key's final state in first-seen order,
//! with unchanged (TOAST) cells filled in from earlier images of the same key.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::{BuildHasher, Hash};

/// A target cell that may stand for "the source did not send this value".
pub trait MaybeUnchanged: Clone {
    /// Whether this cell is the source's "unchanged" marker.
    fn is_unchanged(&self) -> bool;
}

/// Replaces the unchanged cells of `cells` with the values of `from`.
pub fn fill_unchanged<C: MaybeUnchanged>(cells: &mut [C], from: &[C]) {
    for (c, old) in cells.iter_mut().zip(from) {
        if c.is_unchanged() {
            *c = old.clone();
        }
    }
}

/// The buffered final state of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingOp<K, C> {
    /// The key.
    pub key: K,
    /// Delete the key first (it was deleted in the buffer).
    pub delete: bool,
    /// The row to write after that, if any (may hold unchanged cells).
    pub image: Option<Vec<C>>,
    /// Every change of this key so far was a snapshot read.
    pub read: bool,
}

/// Changes of one table reduced per key.
///
/// The index holds positions into `ops` and hashes through them, so a key is stored once
/// (never cloned). The hasher is foldhash with a per-process random seed.
#[derive(Debug)]
pub struct KeyedChanges<K, C> {
    index: HashTable<usize>,
    hasher: DefaultHashBuilder,
    ops: Vec<PendingOp<K, C>>,
}

impl<K, C> Default for KeyedChanges<K, C> {
    fn default() -> Self {
        KeyedChanges {
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            ops: Vec::new(),
        }
    }
}

impl<K: Hash + Eq, C: MaybeUnchanged> KeyedChanges<K, C> {
    /// Position of `key` in `ops`, with its hash.
    fn find(&self, key: &K) -> (u64, Option<usize>) {
        let hash = self.hasher.hash_one(key);
        let ops = &self.ops;
        let at = self.index.find(hash, |&i| ops[i].key == *key).copied();
        (hash, at)
    }

    /// Appends a new key's state.
    fn push(&mut self, hash: u64, op: PendingOp<K, C>) {
        let (ops, hasher) = (&self.ops, &self.hasher);
        self.index
            .insert_unique(hash, ops.len(), |&i| hasher.hash_one(&ops[i].key));
        self.ops.push(op);
    }

    /// `key` now holds `cells` (an insert, update or snapshot read when `read`).
    pub fn upsert(&mut self, key: K, mut cells: Vec<C>, read: bool) {
        match self.find(&key) {
            (_, Some(i)) => {
                let op = &mut self.ops[i];
                if let Some(img) = &op.image {
                    fill_unchanged(&mut cells, img);
                }
                op.image = Some(cells);
                op.read &= read;
            }
            (hash, None) => self.push(
                hash,
                PendingOp {
                    key,
                    delete: false,
                    image: Some(cells),
                    read,
                },
            ),
        }
    }

    /// `key` is deleted.
    pub fn delete(&mut self, key: K) {
        match self.find(&key) {
            (_, Some(i)) => {
                let op = &mut self.ops[i];
                op.delete = true;
                op.image = None;
                op.read = false;
            }
            (hash, None) => self.push(
                hash,
                PendingOp {
                    key,
                    delete: true,
                    image: None,
                    read: false,
                },
            ),
        }
    }

    /// The buffered row image of `key`, if any.
    pub fn image(&self, key: &K) -> Option<&[C]> {
        self.find(key).1.and_then(|i| self.ops[i].image.as_deref())
    }

    /// Takes every key's final state, in first-seen order, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<PendingOp<K, C>> {
        self.index.clear();
        std::mem::take(&mut self.ops)
    }

    /// Forgets everything buffered.
    pub fn clear(&mut self) {
        self.index.clear();
        self.ops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Cell {
        Unchanged,
        V(i32),
    }
    impl MaybeUnchanged for Cell {
        fn is_unchanged(&self) -> bool {
            *self == Cell::Unchanged
        }
    }

    #[test]
    fn each_key_keeps_its_final_state_in_first_seen_order() {
        let mut b = KeyedChanges::default();
        b.upsert(1, vec![Cell::V(1), Cell::V(10)], true);
        b.upsert(2, vec![Cell::V(2), Cell::V(20)], true);
        b.upsert(1, vec![Cell::V(1), Cell::Unchanged], false);
        b.delete(2);
        b.upsert(2, vec![Cell::V(2), Cell::V(21)], false);
        b.delete(3);
        assert_eq!(b.image(&1), Some(&[Cell::V(1), Cell::V(10)][..]));
        let ops = b.take();
        assert_eq!(
            ops,
            vec![
                PendingOp {
                    key: 1,
                    delete: false,
                    image: Some(vec![Cell::V(1), Cell::V(10)]),
                    read: false
                },
                PendingOp {
                    key: 2,
                    delete: true,
                    image: Some(vec![Cell::V(2), Cell::V(21)]),
                    read: false
                },
                PendingOp {
                    key: 3,
                    delete: true,
                    image: None,
                    read: false
                },
            ]
        );
        assert!(b.take().is_empty());
    }
}
