//! The local-directory backend of [`ObjectStore`](super::ObjectStore):
//! keys are relative paths under a root, written atomically (temporary
//! name, fsync, rename).

use std::path::{Path, PathBuf};

use super::{ObjectMeta, StoreError, StoreErrorKind};

/// A directory standing in for a bucket: keys are relative paths. Writes go
/// to a temporary name, are fsynced, then renamed, so a crash never leaves a
/// partial object under its final key.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pub(super) root: PathBuf,
}

impl LocalStore {
    pub(super) fn new(root: &Path) -> Result<Self, StoreError> {
        let shown = root.display().to_string();
        std::fs::create_dir_all(root).map_err(|e| {
            let kind = StoreErrorKind::of_io(&e);
            StoreError::new("configure", &shown, kind, format!("cannot create: {e}"))
        })?;
        let root =
            std::fs::canonicalize(root).map_err(|e| StoreError::io("configure", &shown, &e))?;
        Ok(Self { root })
    }

    pub(super) fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(StoreError::new(
                "resolve",
                key,
                StoreErrorKind::Invalid,
                "invalid key",
            ));
        }
        Ok(self.root.join(key))
    }

    async fn write_atomically(
        &self,
        key: &str,
        write: impl AsyncFnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let target = self.path_of(key)?;
        let dir = target
            .parent()
            .ok_or_else(|| {
                StoreError::new("put", key, StoreErrorKind::Invalid, "key has no parent")
            })?
            .to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StoreError::io("put", key, &e))?;
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = async {
            write(&temp).await?;
            tokio::fs::File::open(&temp).await?.sync_all().await?;
            tokio::fs::rename(&temp, &target).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(|e| StoreError::io("put", key, &e))
    }

    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let mut size = 0;
        self.write_atomically(key, async |temp: &Path| {
            size = tokio::fs::copy(path, temp).await?;
            Ok(())
        })
        .await?;
        Ok(size)
    }

    pub(super) async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_atomically(key, async |temp: &Path| tokio::fs::write(temp, bytes).await)
            .await
    }

    pub(super) async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        use std::io::{Read, Seek};
        let path = self.path_of(key)?;
        let owned_key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let failed = |e: std::io::Error| StoreError::io("get range", &owned_key, &e);
            let mut file = std::fs::File::open(&path).map_err(failed)?;
            file.seek(std::io::SeekFrom::Start(range.start))
                .map_err(failed)?;
            let mut buffer = vec![0u8; (range.end - range.start) as usize];
            file.read_exact(&mut buffer).map_err(failed)?;
            Ok(bytes::Bytes::from(buffer))
        })
        .await
        .map_err(|e| StoreError::new("get range", key, StoreErrorKind::Transient, e))?
    }

    pub(super) async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        tokio::fs::copy(self.path_of(key)?, path)
            .await
            .map_err(|e| StoreError::io("get", key, &e))
    }

    pub(super) async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let meta = tokio::fs::metadata(self.path_of(key)?)
            .await
            .map_err(|e| StoreError::io("head", key, &e))?;
        Ok(meta.len())
    }

    pub(super) async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = self.path_of(from)?;
        self.put_file(to, &source).await.map(|_| ())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("delete", key, &e)),
        }
    }

    pub(super) async fn probe(&self) -> Result<(), StoreError> {
        let shown = self.root.display().to_string();
        match tokio::fs::metadata(&self.root).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::new(
                "probe",
                &shown,
                StoreErrorKind::Invalid,
                "not a directory",
            )),
            Err(e) => Err(StoreError::io("probe", &shown, &e)),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut objects = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let meta = entry.metadata()?;
                    let path = entry.path();
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    let is_temp = relative
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
                    if key.starts_with(&prefix_owned) && !is_temp {
                        objects.push(ObjectMeta {
                            key,
                            size: meta.len(),
                            last_modified: meta.modified().ok(),
                        });
                    }
                }
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
        .map_err(|e| StoreError::new("list", prefix, StoreErrorKind::Transient, e))?
        .map_err(|e| {
            // An entry that went away while it was listed: listing again
            // does not see it.
            let kind = match StoreErrorKind::of_io(&e) {
                StoreErrorKind::NotFound => StoreErrorKind::Transient,
                kind => kind,
            };
            StoreError::new("list", prefix, kind, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_object_is_not_found_and_a_bad_key_is_invalid() {
        let root = std::env::temp_dir().join(format!("strata-local-{}", uuid::Uuid::new_v4()));
        let store = LocalStore::new(&root).expect("a local store");
        let missing = store
            .size("activity/none.parquet")
            .await
            .expect_err("missing");
        assert_eq!(missing.kind, StoreErrorKind::NotFound);
        assert!(missing.not_found() && !missing.is_retryable());
        let range = store
            .get_range("activity/none.parquet", 0..4)
            .await
            .expect_err("missing");
        assert!(range.not_found(), "{range}");

        store.put_bytes("a/short", b"abc").await.expect("put");
        let short = store
            .get_range("a/short", 0..8)
            .await
            .expect_err("too short");
        assert_eq!(short.kind, StoreErrorKind::Transient, "{short}");

        let bad = store.size("a/../b").await.expect_err("a bad key");
        assert_eq!(bad.kind, StoreErrorKind::Invalid);
        assert_eq!(bad.to_string(), "object store: resolve a/../b: invalid key");
        let _ = std::fs::remove_dir_all(&root);
    }
}
