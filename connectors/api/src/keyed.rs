//! Per-key reduction of a batch, for SQL sinks: each key's final state in first-seen order,
//! with unchanged (TOAST) cells filled in from earlier images of the same key.

use std::collections::HashMap;
use std::hash::Hash;

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
#[derive(Debug)]
pub struct KeyedChanges<K, C> {
    index: HashMap<K, usize>,
    ops: Vec<PendingOp<K, C>>,
}

impl<K, C> Default for KeyedChanges<K, C> {
    fn default() -> Self {
        KeyedChanges {
            index: HashMap::new(),
            ops: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, C: MaybeUnchanged> KeyedChanges<K, C> {
    /// `key` now holds `cells` (an insert, update or snapshot read when `read`).
    pub fn upsert(&mut self, key: K, mut cells: Vec<C>, read: bool) {
        match self.index.get(&key).and_then(|&i| self.ops.get_mut(i)) {
            Some(op) => {
                if let Some(img) = &op.image {
                    fill_unchanged(&mut cells, img);
                }
                op.image = Some(cells);
                op.read &= read;
            }
            None => {
                self.index.insert(key.clone(), self.ops.len());
                self.ops.push(PendingOp {
                    key,
                    delete: false,
                    image: Some(cells),
                    read,
                });
            }
        }
    }

    /// `key` is deleted.
    pub fn delete(&mut self, key: K) {
        match self.index.get(&key).and_then(|&i| self.ops.get_mut(i)) {
            Some(op) => {
                op.delete = true;
                op.image = None;
                op.read = false;
            }
            None => {
                self.index.insert(key.clone(), self.ops.len());
                self.ops.push(PendingOp {
                    key,
                    delete: true,
                    image: None,
                    read: false,
                });
            }
        }
    }

    /// The buffered row image of `key`, if any.
    pub fn image(&self, key: &K) -> Option<&[C]> {
        self.index
            .get(key)
            .and_then(|&i| self.ops.get(i))
            .and_then(|op| op.image.as_deref())
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
