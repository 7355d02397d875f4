//! The result-cache backend on JetStream.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{kv, object_store, stream};
use futures_util::StreamExt as _;

use crate::error::Error;
use crate::results::{Blake3Hex, CacheKey};

use super::connect::{bucket, setup};
use super::{BLOBS, NatsConfig, RESULTS};

/// The result-cache backend on JetStream: entries in the key-value bucket `DVM_RESULTS`,
/// blobs in the object store `DVM_BLOBS`. The cache checks what it reads exactly as for the
/// local store (entries signed by a trusted key, blobs checked against their blake3), so a
/// node that can write to the bucket but holds no trusted key cannot make a hit. Calls block on the async
/// client, so they must come from a thread outside the async runtime (sandbox runs do).
pub struct JetStreamBackend {
    handle: tokio::runtime::Handle,
    entries: kv::Store,
    blobs: object_store::ObjectStore,
}

impl JetStreamBackend {
    /// Connects and makes the bucket and object store if missing.
    pub async fn connect(config: &NatsConfig) -> Result<JetStreamBackend, Error> {
        let (js, _, _) = setup(config).await?;
        let entries = bucket(&js, RESULTS, Duration::ZERO).await?;
        let blobs = match js.get_object_store(BLOBS).await {
            Ok(store) => store,
            Err(_) => nats!(
                "cannot make the blob store",
                js.create_object_store(object_store::Config {
                    bucket: BLOBS.to_string(),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
            )?,
        };
        Ok(JetStreamBackend {
            handle: tokio::runtime::Handle::current(),
            entries,
            blobs,
        })
    }

    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(future)
    }
}

impl crate::results::ResultBackend for JetStreamBackend {
    fn get_entry(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, Error> {
        let got = self.block(self.entries.get(key.as_str()));
        Ok(nats!("result cache", got)?.map(|b| b.to_vec()))
    }

    fn put_entry(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), Error> {
        let put = self.block(self.entries.put(key.as_str(), bytes.to_vec().into()));
        nats!("result cache", put).map(|_| ())
    }

    fn remove_entry(&self, key: &CacheKey) -> Result<bool, Error> {
        let existed = self.get_entry(key)?.is_some();
        let purged = self.block(self.entries.purge(key.as_str()));
        nats!("result cache", purged)?;
        Ok(existed)
    }

    fn entries(&self) -> Result<Vec<(CacheKey, u64, SystemTime)>, Error> {
        self.block(async {
            let mut keys = nats!("result cache", self.entries.keys().await)?;
            let mut all = Vec::new();
            while let Some(key) = keys.next().await {
                let Ok(key) = key else { continue };
                let Ok(parsed) = CacheKey::parse(&key) else {
                    continue;
                };
                if let Ok(Some(entry)) = self.entries.entry(key).await {
                    all.push((
                        parsed,
                        entry.value.len() as u64,
                        SystemTime::from(entry.created),
                    ));
                }
            }
            Ok(all)
        })
    }

    /// The shared store does not track use; it is bounded by the bucket's own limits.
    fn touch_entry(&self, _: &CacheKey) {}

    fn get_blob(&self, blake3: &Blake3Hex, max_bytes: u64) -> Result<Option<Vec<u8>>, Error> {
        self.block(async {
            let object = match self.blobs.get(blake3.hex()).await {
                Ok(object) => object,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::Nats(format!("result cache: {e}"))),
            };
            // Whatever the bucket holds under this name, no more than the entry's size (and
            // one byte to tell) is read.
            let mut bytes = Vec::new();
            nats!(
                "result cache",
                tokio::io::AsyncReadExt::read_to_end(
                    &mut tokio::io::AsyncReadExt::take(object, max_bytes.saturating_add(1)),
                    &mut bytes
                )
                .await
            )?;
            if bytes.len() as u64 > max_bytes {
                return Err(Error::Nats(format!(
                    "result cache: output blob {blake3} is larger than its entry says"
                )));
            }
            Ok(Some(bytes))
        })
    }

    fn put_blob(&self, blake3: &Blake3Hex, bytes: &[u8]) -> Result<(), Error> {
        let mut reader = bytes;
        let put = self.block(self.blobs.put(blake3.hex().as_str(), &mut reader));
        nats!("result cache", put).map(|_| ())
    }

    fn remove_blob(&self, blake3: &Blake3Hex) -> Result<(), Error> {
        let deleted = self.block(self.blobs.delete(blake3.hex()));
        nats!("result cache", deleted)
    }

    fn blobs(&self) -> Result<Vec<(Blake3Hex, u64)>, Error> {
        self.block(async {
            let mut list = nats!("result cache", self.blobs.list().await)?;
            let mut all = Vec::new();
            while let Some(info) = list.next().await {
                if let Ok(info) = info
                    && !info.deleted
                    && let Ok(name) = Blake3Hex::parse(&info.name)
                {
                    all.push((name, info.size as u64));
                }
            }
            Ok(all)
        })
    }
}
