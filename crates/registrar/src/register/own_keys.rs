//! A watch on this host's own keys, so that a key someone else deletes or overwrites (an
//! operator's `etcdctl del`, another tool) is put back within moments, not at the next
//! anti-entropy pass. Events only say that something changed; the repair is the same full
//! reconcile the anti-entropy pass runs.

use std::collections::BTreeMap;

use etcd_client::{Client, EventType, WatchOptions, WatchStream};

/// One change seen on a key under the host's prefix: the new value and lease, or `None` for a
/// delete.
pub(super) type Seen = (String, Option<(Vec<u8>, i64)>);

pub(super) struct OwnKeys {
    prefix: String,
    watch: Option<WatchStream>,
}

impl OwnKeys {
    pub(super) fn new(prefix: String) -> Self {
        OwnKeys {
            prefix,
            watch: None,
        }
    }

    /// Starts the watch if it is not running; a failure is left for the next call.
    pub(super) async fn ensure(&mut self, client: &Client) {
        if self.watch.is_some() {
            return;
        }
        let options = WatchOptions::new().with_prefix();
        if let Ok(stream) = client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await
        {
            self.watch = Some(stream);
        }
    }

    /// The next batch of changes. Pends while no watch runs; an ended or failed watch yields an
    /// empty batch and is started again by the next [`OwnKeys::ensure`].
    pub(super) async fn next(&mut self) -> Vec<Seen> {
        let Some(stream) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        match stream.message().await {
            Ok(Some(resp)) => resp
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    let key = kv.key_str().ok()?.to_owned();
                    Some(match event.event_type() {
                        EventType::Delete => (key, None),
                        EventType::Put => (key, Some((kv.value().to_vec(), kv.lease()))),
                    })
                })
                .collect(),
            Ok(None) | Err(_) => {
                self.watch = None;
                Vec::new()
            }
        }
    }
}

/// Whether `seen` undoes what this host wrote: a key it holds deleted, or written with another
/// value or lease, or a key it does not hold put under its prefix.
pub(super) fn foreign(seen: &[Seen], written: &BTreeMap<String, String>, lease: i64) -> bool {
    seen.iter().any(|(key, now)| match (written.get(key), now) {
        (Some(_), None) => true,
        (Some(value), Some((v, l))) => *l != lease || v != value.as_bytes(),
        (None, Some(_)) => true,
        (None, None) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_this_host_did_not_make_are_foreign() {
        let written = BTreeMap::from([("/hm/hosts/b/info".to_owned(), "{}".to_owned())]);
        let ours = ("/hm/hosts/b/info".to_owned(), Some((b"{}".to_vec(), 7)));
        assert!(!foreign(std::slice::from_ref(&ours), &written, 7));
        assert!(foreign(
            &[("/hm/hosts/b/info".to_owned(), None)],
            &written,
            7
        ));
        assert!(
            foreign(std::slice::from_ref(&ours), &written, 8),
            "another lease"
        );
        let changed = (
            "/hm/hosts/b/info".to_owned(),
            Some((b"{\"x\":1}".to_vec(), 7)),
        );
        assert!(foreign(&[changed], &written, 7));
        let stray = (
            "/hm/hosts/b/instances/x/y".to_owned(),
            Some((b"{}".to_vec(), 7)),
        );
        assert!(foreign(&[stray], &written, 7));
        // A delete of a key this host no longer holds (its own removal) is not foreign.
        assert!(!foreign(
            &[("/hm/hosts/b/old".to_owned(), None)],
            &written,
            7
        ));
    }
}
