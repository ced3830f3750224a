//! The Engine.IO sessions of an edge, by sid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::session::Session;

#[derive(Default)]
pub(crate) struct SessionTable {
    by_sid: Mutex<HashMap<String, Arc<Session>>>,
}

impl SessionTable {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        // Inserts and removes cannot leave the map half-changed.
        self.by_sid.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, sid: String, session: Arc<Session>) {
        self.map().insert(sid, session);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map().get(sid).cloned()
    }

    /// Removes `session` if `sid` still names it.
    pub fn remove_if(&self, session: &Arc<Session>) {
        let mut map = self.map();
        if map
            .get(&session.sid)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(&session.sid);
        }
    }

    /// Every open session, at this moment.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }
}
