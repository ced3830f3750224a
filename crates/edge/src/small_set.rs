//! A set of names that is a short list while small: a socket's rooms, a
//! user's sockets, a room's local members. Plain data, no I/O.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;

/// A set that is a short list while it is small, a hash set beyond
/// [`LIST_NAMES`]: most sockets are in a few rooms, most users have one
/// socket, most rooms have a few members on an edge, and a hash set would
/// allocate a table of its own (over 100 bytes) for each, even for one
/// element. Elements are found by their name (`Borrow<str>`).
#[derive(Debug, Clone)]
pub(crate) enum SmallSet<T> {
    List(Vec<T>),
    /// Boxed: the enum stays the size of a `Vec` in every map entry.
    #[expect(clippy::box_collection, reason = "keeps the enum as small as its list")]
    Set(Box<HashSet<T>>),
}

/// Names: a socket's rooms, a user's sockets.
pub(crate) type Names = SmallSet<String>;

/// Most elements a [`SmallSet`] keeps as a list.
const LIST_NAMES: usize = 16;

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet::List(Vec::new())
    }
}

impl<T: Borrow<str> + Eq + Hash> SmallSet<T> {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            SmallSet::List(v) => v.iter().any(|x| x.borrow() == name),
            SmallSet::Set(s) => s.contains(name),
        }
    }

    /// Adds an element, in place of the one with its name if there is one;
    /// `true` if the name is new.
    pub fn insert(&mut self, item: T) -> bool {
        match self {
            SmallSet::List(v) => {
                if let Some(slot) = v.iter_mut().find(|x| (**x).borrow() == item.borrow()) {
                    *slot = item;
                    return false;
                }
                if v.len() < LIST_NAMES {
                    // Grown one at a time: a list is kept only while short.
                    v.reserve_exact(1);
                    v.push(item);
                } else {
                    let mut set: HashSet<T> = std::mem::take(v).into_iter().collect();
                    set.insert(item);
                    *self = SmallSet::Set(Box::new(set));
                }
                true
            }
            SmallSet::Set(s) => s.replace(item).is_none(),
        }
    }

    /// Removes the element with this name; `false` if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        match self {
            SmallSet::List(v) => match v.iter().position(|x| x.borrow() == name) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            SmallSet::Set(s) => s.remove(name),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SmallSet::List(v) => v.len(),
            SmallSet::Set(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let (list, set) = match self {
            SmallSet::List(v) => (Some(v.iter()), None),
            SmallSet::Set(s) => (None, Some(s.iter())),
        };
        list.into_iter().flatten().chain(set.into_iter().flatten())
    }
}

impl<T: Borrow<str> + Eq + Hash> FromIterator<T> for SmallSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = SmallSet::default();
        for x in iter {
            set.insert(x);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_a_list_while_short_and_a_set_beyond() {
        let mut names = Names::default();
        for i in 0..40 {
            assert!(names.insert(format!("n{i}")));
            assert!(!names.insert(format!("n{i}")), "no duplicates");
            assert_eq!(
                matches!(names, SmallSet::List(_)),
                i < LIST_NAMES,
                "after {} names",
                i + 1
            );
        }
        assert_eq!(names.len(), 40);
        assert!(names.contains("n39") && !names.contains("n40"));
        assert!(names.remove("n7") && !names.remove("n7"));
        let mut left: Vec<&String> = names.iter().collect();
        left.sort();
        assert_eq!(left.len(), 39);
        assert!(!names.contains("n7"));
        let mut short: Names = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(short.len(), 2);
        assert!(short.remove("a") && short.remove("b") && short.is_empty());
    }
}
