//! A list of named records as a state file holds it, found by name without a map of owned keys.
//!
//! `state.bin` and `stat.bin` are lists of `(name, record)` pairs. Read into a map, every name
//! is moved into a bucket array a third larger than the list (hashbrown's load factor), and the
//! decoded list is held beside it while the map is built: at 10,000 targets that was about 8 MB
//! of a no-op build's peak. [`Named`] keeps the decoded list as it is and adds an index of 4-byte
//! positions, hashed with FxHash (the keys are the project's own paths, not an attacker's).
//! A sorted list with binary search would need no index at all, but each of its ~15 probes per
//! lookup reads another record's name from elsewhere in memory: measured here, that made a
//! 10,000-target no-op build 50% slower.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// `(name, record)` pairs and an index of their positions by name. A name listed twice is found
/// at its last position, as inserting the pairs into a map in order would leave it.
pub struct Named<V> {
    items: Vec<(String, V)>,
    index: HashTable<u32>,
}

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named { items: Vec::new(), index: HashTable::new() }
    }
}

fn hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

impl<V> Named<V> {
    /// Index `items` (at most `u32::MAX` of them; any beyond are dropped).
    pub fn new(mut items: Vec<(String, V)>) -> Named<V> {
        items.truncate(u32::MAX as usize);
        let mut index = HashTable::with_capacity(items.len());
        for (i, (name, _)) in items.iter().enumerate() {
            let h = hash(name);
            match index.find_mut(h, |&j: &u32| items[j as usize].0 == *name) {
                Some(j) => *j = i as u32,
                None => {
                    index.insert_unique(h, i as u32, |&j: &u32| hash(&items[j as usize].0));
                }
            }
        }
        Named { items, index }
    }

    /// The record of `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.position(name).map(|i| &self.items[i].1)
    }

    /// Where the record of `name` is in the list, if listed: a stable handle for side tables
    /// sized by [`Named::capacity`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.find(hash(name), |&j| self.items[j as usize].0 == name).map(|&i| i as usize)
    }

    /// The record at a [`Named::position`].
    pub fn at(&self, position: usize) -> Option<&V> {
        self.items.get(position).map(|(_, v)| v)
    }

    /// One more than the largest position.
    pub fn capacity(&self) -> usize {
        self.items.len()
    }

    /// Every pair found by its name (a name listed twice: its last pair), in list order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.items
            .iter()
            .enumerate()
            .filter(|(i, (name, _))| self.index.find(hash(name), |&j| j as usize == *i).is_some())
            .map(|(_, (name, v))| (name.as_str(), v))
    }

    /// The pairs, for writing back; a name listed twice keeps only its last pair.
    pub fn into_items(self) -> Vec<(String, V)> {
        let Named { items, index } = self;
        if index.len() == items.len() {
            return items;
        }
        let mut keep = vec![false; items.len()];
        for i in index {
            keep[i as usize] = true;
        }
        items.into_iter().zip(keep).filter_map(|(p, kept)| kept.then_some(p)).collect()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_and_the_last_of_a_repeated_one() {
        let items: Vec<(String, u32)> = (0..1000)
            .map(|i| (format!("out/t_{i}.txt"), i))
            .chain([("out/t_7.txt".to_string(), 9999)])
            .collect();
        let n = Named::new(items);
        assert_eq!(n.len(), 1000);
        for i in 0..1000 {
            let want = if i == 7 { 9999 } else { i };
            assert_eq!(n.get(&format!("out/t_{i}.txt")), Some(&want), "t_{i}");
        }
        assert_eq!(n.get("out/t_1000.txt"), None);
        let p = n.position("out/t_7.txt").unwrap();
        assert_eq!((p, n.at(p), n.capacity()), (1000, Some(&9999), 1001));
        assert_eq!(n.get(""), None);
        assert_eq!(n.iter().count(), 1000);
        assert_eq!(n.iter().find(|(k, _)| *k == "out/t_7.txt").map(|(_, v)| *v), Some(9999));
        let back = n.into_items();
        assert_eq!(back.len(), 1000);
        assert!(back.contains(&("out/t_7.txt".to_string(), 9999)));
        assert!(!back.contains(&("out/t_7.txt".to_string(), 7)));
    }

    #[test]
    fn empty() {
        let n: Named<u8> = Named::default();
        assert!(n.is_empty());
        assert_eq!(n.get("x"), None);
        assert!(n.into_items().is_empty());
    }
}
