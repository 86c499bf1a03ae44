//! `basic_auth_users`: bcrypt-hashed passwords, checked in constant work per attempt.
//!
//! bcrypt is deliberately slow, so successful checks are cached (keyed by user, stored hash and a SHA-256 of the
//! password, never the password itself); unknown users still cost one bcrypt run against a dummy hash, so response
//! times do not reveal which users exist.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::Mutex,
};

use super::file::WebConfigError;

/// A hash of "not a password" at cost 10, so a failed lookup costs what a real check costs.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Bound on the cache so a client cannot grow it without limit (only successes are cached).
const CACHE_MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    verified: Mutex<HashSet<(String, String, [u8; 32])>>,
}

impl Users {
    pub fn new(config: &Path, users: &BTreeMap<String, String>) -> Result<Self, WebConfigError> {
        for (user, hash) in users {
            if user.contains(':') {
                return Err(WebConfigError::new(
                    config,
                    format!("basic_auth_users.{user}"),
                    "a user name cannot contain ':'",
                ));
            }
            let ok = hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
            if !ok || bcrypt::verify("", hash).is_err() {
                return Err(WebConfigError::new(
                    config,
                    format!("basic_auth_users.{user}"),
                    "not a bcrypt hash (expected $2y$<cost>$<53 characters>, e.g. from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                ));
            }
        }
        Ok(Self { hashes: users.clone(), verified: Mutex::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `user`/`password` match. Blocking (bcrypt): call from a blocking context.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else {
            let _ = bcrypt::verify(password, DUMMY_HASH);
            return false;
        };
        let digest: [u8; 32] =
            ring::digest::digest(&ring::digest::SHA256, password.as_bytes()).as_ref().try_into().unwrap_or([0; 32]);
        let key = (user.to_string(), hash.clone(), digest);
        if self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_users() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Users::new(Path::new("w.yml"), &BTreeMap::from([("alice".to_string(), hash)])).unwrap();
        assert!(users.check("alice", "s3cret"));
        assert!(users.check("alice", "s3cret"), "cached");
        assert!(!users.check("alice", "wrong"));
        assert!(!users.check("bob", "s3cret"));
        let e = Users::new(Path::new("w.yml"), &BTreeMap::from([("bob".to_string(), "plain".to_string())]));
        assert!(e.unwrap_err().to_string().starts_with("web config w.yml: basic_auth_users.bob: not a bcrypt hash"));
        assert!(bcrypt::verify("x", DUMMY_HASH).is_ok());
    }
}
