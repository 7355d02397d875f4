//! Ed25519 keys for result-cache entries and for outcomes on the bus.
//!
//! - The signing key of a home is `$DVM_HOME/keys/results.ed25519`: a 32-byte seed in hex,
//!   generated on first use (mode 0600, written to a fresh file and linked into place, so two
//!   processes starting at once agree on one key). A key file that other users can read is
//!   refused.
//! - A deployment key (`--cache-key-file` / `DVM_CACHE_KEY_FILE`) is a file of the same
//!   format shared by the nodes of one NATS deployment; `dvm cache keygen FILE` makes one.
//! - Trusted public keys: the home's own, a deployment key's, the lines of
//!   `$DVM_HOME/keys/trusted` (`dvm cache trust KEY`), `trusted_keys` under `[cache]` in the
//!   configuration file, `DVM_CACHE_TRUST` and `--trust` flags.
//!
//! What is signed is a versioned, length-prefixed message ([`message`]) whose first field
//! names its purpose, so a signature made for one purpose never verifies for another.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The prefix of a public key as dvm prints it.
const PUBLIC_PREFIX: &str = "ed25519:";
/// The environment variable with more trusted keys (comma- or space-separated).
pub const TRUST_ENV: &str = "DVM_CACHE_TRUST";

/// An Ed25519 public key, written `ed25519:` and 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses `ed25519:HEX` (the prefix may be left out; hex in either case).
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex = text.strip_prefix(PUBLIC_PREFIX).unwrap_or(text);
        decode_hex32(hex).map(PublicKey).ok_or_else(|| {
            format!(
                "`{}` is not a dvm public key (ed25519: and 64 hex digits, as `dvm cache key` \
                 prints it)",
                text.escape_debug()
            )
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUBLIC_PREFIX)?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PublicKey::parse(text)
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public)
    }
}

fn key_error(path: &Path, what: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("signing key {}: {what}", path.display()))
}

impl SigningKey {
    fn from_seed(seed: &[u8; 32]) -> Result<SigningKey, Error> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| Error::Internal(format!("cannot use an Ed25519 seed: {e}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(SigningKey {
            pair,
            public: PublicKey(public),
        })
    }

    fn new_seed() -> Result<[u8; 32], Error> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| Error::Internal("no randomness for a new signing key".into()))?;
        Ok(seed)
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs [`message`]`(domain, parts)`.
    pub(crate) fn sign(&self, domain: &str, parts: &[&[u8]]) -> Vec<u8> {
        self.pair.sign(&message(domain, parts)).as_ref().to_vec()
    }

    /// Reads a key file: a regular file owned by this user that neither group nor others can
    /// read, holding a 32-byte seed in hex.
    pub fn load(path: &Path) -> Result<SigningKey, Error> {
        let mut file = std::fs::File::open(path).map_err(|e| key_error(path, e))?;
        let meta = file.metadata().map_err(|e| key_error(path, e))?;
        if !meta.is_file() {
            return Err(key_error(path, "not a regular file"));
        }
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        let me = rustix::process::geteuid().as_raw();
        if owner != me {
            return Err(key_error(
                path,
                format_args!(
                    "it belongs to user id {owner}, not to you (user id {me}), so it is not \
                     used; a signing key must be yours (`chown` it)"
                ),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(
                path,
                format_args!(
                    "other users can read it (mode {mode:03o}), so it is not used; run \
                     `chmod 600 {}`, and make a new key if others may have copied it",
                    path.display()
                ),
            ));
        }
        if meta.len() > 1024 {
            return Err(key_error(path, "too large for a key file"));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| key_error(path, e))?;
        let seed = decode_hex32(text.trim()).ok_or_else(|| {
            key_error(
                path,
                "not a key file (64 hex digits); `dvm cache keygen FILE` makes one",
            )
        })?;
        SigningKey::from_seed(&seed)
    }

    /// Makes a new key file at `path` (mode 0600); an existing file is left alone and refused.
    pub fn create(path: &Path) -> Result<SigningKey, Error> {
        let seed = SigningKey::new_seed()?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| key_error(path, e))?;
        write_seed(&file, &seed).map_err(|e| key_error(path, e))?;
        SigningKey::from_seed(&seed)
    }

    /// The home's key, made on first use.
    pub fn home(home: &Path) -> Result<SigningKey, Error> {
        let path = home_key_path(home);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(key_error(
                    &path,
                    "it is a symbolic link; dvm keeps its own key as a regular file",
                ));
            }
            Ok(_) => return SigningKey::load(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_error(&path, e)),
        }
        let dir = path.parent().unwrap_or(home);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| key_error(&path, e))?;
        // A fresh file of our own, then a link into place that fails when another process
        // got there first: its key then is the key.
        let seed = SigningKey::new_seed()?;
        let temp = tempfile::Builder::new()
            .prefix(".key-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| key_error(&path, e))?;
        write_seed(temp.as_file(), &seed).map_err(|e| key_error(&path, e))?;
        match std::fs::hard_link(temp.path(), &path) {
            Ok(()) => SigningKey::from_seed(&seed),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => SigningKey::load(&path),
            Err(e) => Err(key_error(&path, e)),
        }
    }
}

fn write_seed(mut file: &std::fs::File, seed: &[u8; 32]) -> std::io::Result<()> {
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    file.write_all(format!("{hex}\n").as_bytes())?;
    file.sync_all()
}

pub fn home_key_path(home: &Path) -> PathBuf {
    crate::home::result_signing_key(home)
}

pub fn trusted_path(home: &Path) -> PathBuf {
    crate::home::trusted_keys(home)
}

/// The message a signature covers: a purpose, then every part with its length.
pub(crate) fn message(domain: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The keys whose signatures are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    keys: BTreeSet<PublicKey>,
}

impl Trust {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Trust {
        Trust {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key);
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// The keys a home trusts besides its own: its `keys/trusted` file, the configuration
    /// file's `[cache] trusted_keys` and `DVM_CACHE_TRUST`. Lines that are not keys are
    /// reported and skipped.
    pub fn of_home(home: &Path) -> Trust {
        Trust::of_home_with(
            home,
            &crate::profile::ConfigFile::path(home),
            &crate::engine::cache_trust_from_env(),
        )
    }

    /// What `config` says to trust: its home's `keys/trusted` file, the configuration file's
    /// `[cache] trusted_keys` and [`Config::cache_trust`](crate::Config::cache_trust).
    pub fn of_config(config: &crate::Config) -> Trust {
        Trust::of_home_with(
            &config.home,
            &config.config_file_path(),
            &config.cache_trust,
        )
    }

    /// The keys in `home`'s `keys/trusted` file, the configuration file at `config_file`'s
    /// `[cache] trusted_keys`, and `extra` (each reported as coming from `DVM_CACHE_TRUST`).
    pub fn of_home_with(home: &Path, config_file: &Path, extra: &[String]) -> Trust {
        let mut trust = Trust::default();
        let mut add = |text: &str, source: &str| match PublicKey::parse(text) {
            Ok(key) => trust.add(key),
            Err(e) => tracing::warn!("{source}: {e}; it is not trusted"),
        };
        let path = trusted_path(home);
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some(key) = line.split_whitespace().next() {
                    add(key, &path.display().to_string());
                }
            }
        }
        match crate::profile::ConfigFile::load_from(config_file) {
            Ok(config) => {
                for key in &config.cache.trusted_keys {
                    add(key, &config.source);
                }
            }
            Err(e) => tracing::warn!("trusted keys of the configuration file are not read: {e}"),
        }
        for key in extra {
            add(key.trim(), TRUST_ENV);
        }
        trust
    }

    /// Checks `signed` with a key of this set under `domain` and `parts`.
    pub(crate) fn verify(
        &self,
        signed: &SignedBy,
        domain: &str,
        parts: &[&[u8]],
    ) -> Result<PublicKey, Rejection> {
        let signer = PublicKey::parse(&signed.signer).map_err(|_| Rejection::Unsigned)?;
        if !self.contains(&signer) {
            return Err(Rejection::Untrusted(signer));
        }
        let signature = b64()
            .decode(&signed.signature)
            .map_err(|_| Rejection::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, signer.0)
            .verify(&message(domain, parts), &signature)
            .map_err(|_| Rejection::BadSignature)?;
        Ok(signer)
    }
}

/// Records `key` as trusted in the home's `keys/trusted` file (rewritten through a temp file
/// and a rename). Returns false when it was trusted already.
pub fn trust_in_home(home: &Path, key: PublicKey) -> Result<bool, Error> {
    let path = trusted_path(home);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(Error::ReadInput { path, source }),
    };
    let listed = existing.lines().any(|line| {
        line.split_whitespace()
            .next()
            .and_then(|k| PublicKey::parse(k).ok())
            == Some(key)
    });
    if listed {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(home);
    let fail = |source: std::io::Error| {
        Error::from(crate::error::HostError::Io {
            action: format!("write {}", path.display()),
            source,
        })
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".trusted-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(fail)?;
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{key}\n"));
    temp.write_all(text.as_bytes()).map_err(fail)?;
    temp.persist(&path).map_err(|e| fail(e.error))?;
    Ok(true)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A signer and a signature, as they travel next to what they sign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SignedBy {
    pub signer: String,
    pub signature: String,
}

impl SignedBy {
    pub fn new(key: &SigningKey, domain: &str, parts: &[&[u8]]) -> SignedBy {
        SignedBy {
            signer: key.public().to_string(),
            signature: b64().encode(key.sign(domain, parts)),
        }
    }
}

/// Why something signed was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It carries no signature dvm can read.
    Unsigned,
    /// Signed by a key nobody trusted.
    Untrusted(PublicKey),
    /// The signature does not match what it came with (changed after signing).
    BadSignature,
    /// Not in the format, or not what it claims to be.
    Malformed(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Unsigned => f.write_str("it is not signed"),
            Rejection::Untrusted(key) => write!(
                f,
                "it is signed by {key}, which is not trusted (`dvm cache trust KEY` or --trust \
                 KEY trusts a key)"
            ),
            Rejection::BadSignature => {
                f.write_str("its signature does not match its content (it was changed)")
            }
            Rejection::Malformed(why) => f.write_str(why),
        }
    }
}

/// What signs and what is trusted: a signing key and the trusted set (which holds the
/// signing key's own public key).
#[derive(Debug, Clone)]
pub struct Keys {
    pub signer: Arc<SigningKey>,
    pub trust: Trust,
}

impl Keys {
    /// `signer`, trusting its own key and `trust`.
    pub fn new(signer: SigningKey, mut trust: Trust) -> Keys {
        trust.add(signer.public());
        Keys {
            signer: Arc::new(signer),
            trust,
        }
    }

    /// The home's key and what the home trusts ([`Trust::of_home`]).
    pub fn home(home: &Path) -> Result<Keys, Error> {
        Ok(Keys::new(SigningKey::home(home)?, Trust::of_home(home)))
    }

    /// The key of `config`'s home and what `config` says to trust ([`Trust::of_config`]).
    pub fn of_config(config: &crate::Config) -> Result<Keys, Error> {
        Ok(Keys::new(
            SigningKey::home(&config.home)?,
            Trust::of_config(config),
        ))
    }

    /// For a node of a deployment: signs with `deployment` when given (else the home's key)
    /// and trusts the home's key, the deployment key, what the home trusts and `extra`.
    pub fn node(
        home: &Path,
        deployment: Option<&Path>,
        extra: &[PublicKey],
    ) -> Result<Keys, Error> {
        Keys::node_with(
            SigningKey::home(home)?,
            Trust::of_home(home),
            deployment,
            extra,
        )
    }

    /// [`Keys::node`] for the home and trusted keys `config` names.
    pub fn node_of_config(
        config: &crate::Config,
        deployment: Option<&Path>,
        extra: &[PublicKey],
    ) -> Result<Keys, Error> {
        Keys::node_with(
            SigningKey::home(&config.home)?,
            Trust::of_config(config),
            deployment,
            extra,
        )
    }

    fn node_with(
        own: SigningKey,
        mut trust: Trust,
        deployment: Option<&Path>,
        extra: &[PublicKey],
    ) -> Result<Keys, Error> {
        trust.add(own.public());
        for key in extra {
            trust.add(*key);
        }
        let signer = match deployment {
            Some(path) => SigningKey::load(path)?,
            None => own,
        };
        Ok(Keys::new(signer, trust))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_comes_from_the_config_file_and_keys_the_config_names() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let in_file = SigningKey::home(&other.path().join("a")).unwrap().public();
        let listed = SigningKey::home(&other.path().join("b")).unwrap().public();
        let file = other.path().join("elsewhere.toml");
        std::fs::write(&file, format!("[cache]\ntrusted_keys = [\"{in_file}\"]\n")).unwrap();
        let mut config = crate::Config::from_env();
        config.home = home.path().to_path_buf();
        config.config_file = Some(file);
        config.cache_trust = vec![listed.to_string(), "not-a-key".into()];
        let trust = Trust::of_config(&config);
        assert!(
            trust.contains(&in_file),
            "the named configuration file is read"
        );
        assert!(
            trust.contains(&listed),
            "the keys the config lists are trusted"
        );
        config.config_file = None;
        config.cache_trust.clear();
        let trust = Trust::of_config(&config);
        assert!(!trust.contains(&in_file) && !trust.contains(&listed));
        let keys = Keys::of_config(&config).unwrap();
        let own = SigningKey::home(home.path()).unwrap().public();
        assert!(keys.trust.contains(&own), "the home's own key is trusted");
    }

    #[test]
    fn a_signature_verifies_only_for_its_purpose_parts_and_trusted_signer() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::home(dir.path()).unwrap();
        let again = SigningKey::home(dir.path()).unwrap();
        assert_eq!(key.public(), again.public(), "the home key is made once");
        let mode = std::fs::metadata(home_key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let signed = SignedBy::new(&key, "d", &[b"ab", b"c"]);
        let trust = Trust::new([key.public()]);
        assert!(trust.verify(&signed, "d", &[b"ab", b"c"]).is_ok());
        assert!(trust.verify(&signed, "d", &[b"a", b"bc"]).is_err());
        assert!(trust.verify(&signed, "e", &[b"ab", b"c"]).is_err());
        assert!(matches!(
            Trust::default().verify(&signed, "d", &[b"ab", b"c"]),
            Err(Rejection::Untrusted(_))
        ));
        assert_eq!(
            PublicKey::parse(&key.public().to_string()).unwrap(),
            key.public()
        );
        std::fs::set_permissions(
            home_key_path(dir.path()),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(SigningKey::home(dir.path()).is_err());
    }
}
