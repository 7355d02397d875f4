//! Many machines over NATS JetStream: a work-queue stream of run requests, workers that pull
//! and execute them, outcomes in a key-value bucket, and a result-cache backend shared by
//! every node (key-value for entries, an object store for blobs).
//!
//! - Requests go to the stream `DVM_RUNS` (subject `dvm.runs`, work-queue retention, bounded:
//!   a publish past the bound is refused and reported as [`Error::QueueFull`]).
//! - Workers share one durable pull consumer, `dvm-workers`. A worker sends in-progress acks
//!   while a run goes on, stores the outcome under the request's id in the bucket
//!   `DVM_OUTCOMES` with a create (first writer wins), and only then acknowledges. A worker
//!   that dies has its request redelivered after the ack wait; a second execution finds the
//!   outcome already stored and keeps it, so one request has one stored answer.
//! - Callers publish with the request id as `Nats-Msg-Id` (a retried publish is not queued
//!   twice) and watch the outcome key.
//!
//! # Trust
//! Everything read from the bus is hostile until checked. Outcomes are stored signed
//! ([`SignedOutcome`]: Ed25519 over the request id and the outcome) with the worker's key,
//! and a caller returns only an outcome signed by a key it trusts ([`NatsConfig::keys`]); an
//! outcome that does not verify is reported and ignored, and a worker that finds one in the
//! place of its answer overwrites it. Result-cache entries on the bus are signed the same way
//! by [`crate::results::ResultCache`]. Workers cap every limit of a request at their own
//! maxima ([`WorkerConfig::max`]). Connections authenticate as [`NatsAuth`] says.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::dvm::Dvm;
use crate::error::Error;
use crate::limits::{LimitKind, Limits, OutputOverflow};
use crate::outcome::{Outcome, Status, Truncated};
use crate::results::signing::SignedBy;
use crate::results::{Blake3Hex, CacheKey, Keys, Rejection, Trust};
use crate::sandbox::RunInput;

pub const STREAM: &str = "DVM_RUNS";
pub const SUBJECT: &str = "dvm.runs";
pub const CONSUMER: &str = "dvm-workers";
pub const OUTCOMES: &str = "DVM_OUTCOMES";
pub const RESULTS: &str = "DVM_RESULTS";
pub const BLOBS: &str = "DVM_BLOBS";

/// How dvm uses a NATS deployment.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// Requests the stream holds at most; a publish past it is refused.
    pub max_queued: i64,
    /// How long a worker may hold a request without acknowledging (it sends progress acks
    /// while running) before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries of one request at most (a request that kills every worker is dropped).
    pub max_deliver: i64,
    /// How long outcomes are kept for callers to read.
    pub outcome_ttl: Duration,
    /// How to authenticate to the NATS server.
    pub auth: NatsAuth,
    /// The key this node signs outcomes with and the keys whose outcomes it accepts. A
    /// queue or worker without keys cannot start.
    pub keys: Option<Keys>,
}

impl NatsConfig {
    pub fn new(url: &str) -> NatsConfig {
        NatsConfig {
            url: url.to_string(),
            max_queued: 100_000,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            outcome_ttl: Duration::from_secs(3600),
            auth: NatsAuth::default(),
            keys: None,
        }
    }

    pub fn with_keys(mut self, keys: Keys) -> NatsConfig {
        self.keys = Some(keys);
        self
    }

    pub fn with_auth(mut self, auth: NatsAuth) -> NatsConfig {
        self.auth = auth;
        self
    }

    fn keys(&self) -> Result<&Keys, Error> {
        self.keys.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "no signing keys for NATS: set NatsConfig::keys (the CLI uses the home's key or \
                 --cache-key-file)"
                    .into(),
            )
        })
    }
}

/// How a node authenticates to NATS (any combination the server asks for) and whether TLS
/// is required.
#[derive(Clone, Default)]
pub struct NatsAuth {
    pub token: Option<String>,
    /// User name and password.
    pub user: Option<(String, String)>,
    /// Connect only over TLS.
    pub require_tls: bool,
    /// PEM file of the certificate authorities that sign the server's certificate.
    pub root_ca: Option<PathBuf>,
    /// PEM files of this client's certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A user nkey seed: the client signs the server's nonce with it.
    pub nkey: Option<NkeySeed>,
    /// A credentials file's user JWT and nkey seed (decentralized JWT authentication).
    pub creds: Option<NatsCreds>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("require_tls", &self.require_tls)
            .field("root_ca", &self.root_ca)
            .field("client_cert", &self.client_cert)
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .finish()
    }
}

impl NatsAuth {
    /// The async-nats options these settings make (what every connection of this node uses).
    pub fn options(&self) -> Result<async_nats::ConnectOptions, Error> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = &self.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.seed.clone());
        }
        if let Some(creds) = &self.creds {
            options = options
                .credentials(&creds.canonical())
                .map_err(|e| creds_error(&creds.path, &e))?;
        }
        if let Some(ca) = &self.root_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls || self.root_ca.is_some() || self.client_cert.is_some() {
            options = options.require_tls(true);
        }
        Ok(options.connection_timeout(Duration::from_secs(10)))
    }
}

/// The longest nkey seed file or credentials file read (both are a few hundred bytes).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A NATS user's nkey seed (`SU…`, 58 characters), checked to decode to a user key pair.
/// Neither its `Debug` nor any error shows the seed; the public key (`U…`) may be shown.
#[derive(Clone)]
pub struct NkeySeed {
    seed: String,
    public: String,
}

impl std::fmt::Debug for NkeySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NkeySeed({})", self.public)
    }
}

impl NkeySeed {
    /// The seed in `text` (surrounding whitespace ignored); `source` names where it came
    /// from in errors.
    pub fn parse(text: &str, source: &str) -> Result<NkeySeed, Error> {
        let text = text.trim();
        let malformed = || {
            Error::InvalidInput(format!(
                "{source} is not a NATS user nkey seed (58 characters of A-Z and 2-7 starting                  with `SU`, as `nk -gen user` or `nsc` make)"
            ))
        };
        let shaped = text.len() == 58
            && text.starts_with('S')
            && text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
        if !shaped {
            return Err(malformed());
        }
        let pair = nkeys::KeyPair::from_seed(text).map_err(|_| malformed())?;
        if !matches!(pair.key_pair_type(), nkeys::KeyPairType::User) {
            return Err(Error::InvalidInput(format!(
                "{source} is the seed of a {:?} nkey; NATS clients authenticate with a user \
                 seed (it starts with `SU`)",
                pair.key_pair_type()
            )));
        }
        Ok(NkeySeed {
            seed: text.to_string(),
            public: pair.public_key(),
        })
    }

    /// Reads a seed file: a regular file that neither group nor others can read or write.
    pub fn from_file(path: &std::path::Path) -> Result<NkeySeed, Error> {
        let text = read_secret_file(path, "NATS nkey seed file")?;
        NkeySeed::parse(
            &text,
            &format!("the NATS nkey seed file {}", path.display()),
        )
    }

    /// The public key (`U…`) the server knows this user by.
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

/// A NATS credentials file (a user JWT and that user's nkey seed, as `nsc` writes them),
/// parsed into its two parts: the JWT block after a `BEGIN NATS USER JWT` line (three
/// base64url segments) and the user seed block after a `BEGIN USER NKEY SEED` line. Its
/// `Debug` shows only the path.
#[derive(Clone)]
pub struct NatsCreds {
    jwt: String,
    seed: NkeySeed,
    path: PathBuf,
}

impl std::fmt::Debug for NatsCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsCreds({})", self.path.display())
    }
}

impl NatsCreds {
    /// Reads a credentials file: a regular file that neither group nor others can read or
    /// write, holding a decorated user JWT and user nkey seed.
    pub fn from_file(path: &std::path::Path) -> Result<NatsCreds, Error> {
        let text = read_secret_file(path, "NATS credentials file")?;
        NatsCreds::parse(&text, path)
    }

    /// Credentials in `text`; `path` names them in errors.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<NatsCreds, Error> {
        let unusable = |why: &str| creds_error(path, &why);
        let jwt = decorated_block(text, "BEGIN NATS USER JWT")
            .ok_or_else(|| unusable("no user JWT block"))?;
        let segments: Vec<&str> = jwt.split('.').collect();
        let jwt_shaped = segments.len() == 3
            && segments.iter().all(|segment| {
                !segment.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
            });
        if !jwt_shaped {
            return Err(unusable("its user JWT block is not a JWT"));
        }
        let seed = decorated_block(text, "BEGIN USER NKEY SEED")
            .ok_or_else(|| unusable("no user nkey seed block"))?;
        let seed = NkeySeed::parse(seed, "its seed block").map_err(|e| match e {
            Error::InvalidInput(why) => unusable(&why),
            other => other,
        })?;
        Ok(NatsCreds {
            jwt: jwt.to_string(),
            seed,
            path: path.to_path_buf(),
        })
    }

    /// The credentials in the file format async-nats reads, rebuilt from the checked parts
    /// (so that it finds exactly these two blocks).
    fn canonical(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            self.jwt, self.seed.seed
        )
    }
}

/// The first non-empty line after the line that holds `marker` between dashes, if the
/// line after it closes the block (a dashed line).
fn decorated_block<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|line| line.starts_with("---") && line.contains(marker))?;
    let mut rest = lines.skip_while(|line| line.is_empty());
    let block = rest.next()?;
    let closed = rest.next().is_some_and(|line| line.starts_with("---"));
    (closed && !block.starts_with('-')).then_some(block)
}

/// Why a credentials file cannot be used (never with the seed).
fn creds_error(path: &std::path::Path, why: &dyn std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "the NATS credentials file {} is not usable: {why}; it must hold a `-----BEGIN NATS \
         USER JWT-----` block and a `-----BEGIN USER NKEY SEED-----` block (as `nsc generate \
         creds` writes)",
        path.display()
    ))
}

/// The text of a secret file (a seed or credentials): a regular file of at most
/// [`MAX_SECRET_FILE`] bytes, owned by this user, that group and others can neither read nor
/// write (checked on the opened file, as ssh does for keys).
fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String, Error> {
    use std::io::Read as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |why: &dyn std::fmt::Display| {
        Error::InvalidInput(format!("cannot use the {what} {}: {why}", path.display()))
    };
    // Non-blocking, so that a FIFO in its place is refused below instead of waited on.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| fail(&e))?;
    let meta = file.metadata().map_err(|e| fail(&e))?;
    if !meta.is_file() {
        return Err(fail(&"not a regular file"));
    }
    let me = rustix::process::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(fail(&format_args!(
            "it belongs to user id {}, not to you (user id {me}), so it is not used; a secret \
             file must be yours (`chown` it)",
            std::os::unix::fs::MetadataExt::uid(&meta)
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(&format_args!(
            "group or other users can access it (mode {mode:03o}), so it is not used; run \
             `chmod 600 {}`, and replace the secret if others may have copied it",
            path.display()
        )));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(fail(&format_args!("larger than {MAX_SECRET_FILE} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(fail(&format_args!("larger than {MAX_SECRET_FILE} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| fail(&"not UTF-8 text"))
}

/// Whether `id` can be a request id: what [`crate::server::new_id`] makes, or any short
/// name of letters, digits, `-` and `_` (it becomes a bucket key and appears in logs).
fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn nats_error(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Nats(format!("{what}: {e}"))
}

macro_rules! nats {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| nats_error($what)(&e))
    };
}

/// Limits as they travel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireLimits {
    pub deadline_ms: u64,
    pub fuel: Option<u64>,
    pub memory_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stop_on_overflow: bool,
    pub table_elements: u64,
    pub disk_bytes: u64,
    pub files: u64,
    pub open_files: u64,
}

impl From<&Limits> for WireLimits {
    fn from(l: &Limits) -> Self {
        WireLimits {
            // Rounded up: a deadline under a millisecond must not become zero.
            deadline_ms: u64::try_from(l.deadline.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX),
            fuel: l.fuel,
            memory_bytes: l.memory_bytes,
            stdout_bytes: l.stdout_bytes,
            stderr_bytes: l.stderr_bytes,
            stop_on_overflow: l.output_overflow == OutputOverflow::Stop,
            table_elements: l.table_elements,
            disk_bytes: l.disk_bytes,
            files: l.files,
            open_files: l.open_files,
        }
    }
}

impl From<&WireLimits> for Limits {
    fn from(w: &WireLimits) -> Self {
        Limits {
            deadline: Duration::from_millis(w.deadline_ms),
            fuel: w.fuel,
            memory_bytes: w.memory_bytes,
            stdout_bytes: w.stdout_bytes,
            stderr_bytes: w.stderr_bytes,
            output_overflow: if w.stop_on_overflow {
                OutputOverflow::Stop
            } else {
                OutputOverflow::Truncate
            },
            table_elements: w.table_elements,
            disk_bytes: w.disk_bytes,
            files: w.files,
            open_files: w.open_files,
        }
    }
}

/// One run as it travels on the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    /// Unique per request; the outcome is stored under it.
    pub id: String,
    pub runtime: String,
    /// The script's file name.
    pub name: String,
    pub code: String,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub limits: WireLimits,
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Files written into the workspace first: path → base64 bytes.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// A deterministic run's seed (such runs use the shared result cache).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl RunRequest {
    /// A request for `code` in `runtime` with `input`'s arguments, environment, stdin,
    /// limits and seed (its workspace, grants and callbacks do not travel).
    pub fn new(runtime: &str, name: &str, code: &str, input: &RunInput) -> RunRequest {
        RunRequest {
            id: crate::server::new_id(),
            runtime: runtime.to_string(),
            name: name.to_string(),
            code: code.to_string(),
            stdin: String::from_utf8_lossy(&input.stdin).into_owned(),
            args: input.args.clone(),
            env: input.env.clone(),
            limits: WireLimits::from(&input.limits),
            requirements: Vec::new(),
            files: BTreeMap::new(),
            seed: input.deterministic.map(|d| d.seed),
        }
    }
}

/// An outcome as it travels, with the worker that produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOutcome {
    pub request: String,
    pub worker: String,
    /// The delivery that produced it (1 unless a worker died first).
    pub delivery: u64,
    /// Set when the request could not run at all (unknown runtime, install failure…).
    pub error: Option<String>,
    /// Whether that error was in the request (a bad runtime, limits, packages) rather than on
    /// the worker.
    #[serde(default)]
    pub user_error: bool,
    pub status: Option<Status>,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: Truncated,
    pub limit: Option<LimitKind>,
    pub fuel_used: u64,
    pub duration_ms: f64,
    pub memory_peak_bytes: u64,
    pub trap: Option<String>,
    pub files: Vec<crate::workspace::OutputFile>,
    pub cache: crate::results::CacheStatus,
    pub cache_key: Option<String>,
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

impl WireOutcome {
    fn of(request: &str, worker: &str, delivery: u64, ran: Result<Outcome, Error>) -> Self {
        let mut wire = WireOutcome {
            request: request.to_string(),
            worker: worker.to_string(),
            delivery,
            error: None,
            user_error: false,
            status: None,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: Truncated::default(),
            limit: None,
            fuel_used: 0,
            duration_ms: 0.0,
            memory_peak_bytes: 0,
            trap: None,
            files: Vec::new(),
            cache: crate::results::CacheStatus::Off,
            cache_key: None,
        };
        match ran {
            Ok(o) => {
                wire.status = Some(o.status);
                wire.exit_code = o.exit_code;
                wire.stdout = encode(&o.stdout);
                wire.stderr = encode(&o.stderr);
                wire.stdout_bytes = o.stdout_bytes;
                wire.stderr_bytes = o.stderr_bytes;
                wire.truncated = o.truncated;
                wire.limit = o.limit;
                wire.fuel_used = o.fuel_used;
                wire.duration_ms = o.duration.as_secs_f64() * 1000.0;
                wire.memory_peak_bytes = o.memory_peak_bytes;
                wire.trap = o.trap;
                wire.files = o.files;
                wire.cache = o.cache;
                wire.cache_key = o.cache_key;
            }
            Err(e) => {
                wire.user_error = e.is_user_error();
                wire.error = Some(e.to_string());
            }
        }
        wire
    }

    /// The outcome, or the error the worker met.
    pub fn into_outcome(self) -> Result<Outcome, Error> {
        if let Some(error) = self.error {
            return Err(match self.user_error {
                true => Error::InvalidInput(error),
                false => Error::Remote(error),
            });
        }
        Ok(Outcome {
            status: self.status.unwrap_or(Status::Crashed),
            exit_code: self.exit_code,
            stdout: decode(&self.stdout),
            stderr: decode(&self.stderr),
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            truncated: self.truncated,
            limit: self.limit,
            fuel_used: self.fuel_used,
            duration: Duration::try_from_secs_f64(self.duration_ms / 1000.0).unwrap_or_default(),
            memory_peak_bytes: self.memory_peak_bytes,
            trap: self.trap,
            files: self.files,
            cache: self.cache,
            cache_key: self.cache_key,
        })
    }
}

/// The purpose a signature over an outcome is made for.
const OUTCOME_DOMAIN: &str = "dvm bus outcome v1";

/// An outcome as stored in the bucket: the [`WireOutcome`]'s JSON and a signature over the
/// request id and that JSON by the worker's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedOutcome {
    #[serde(flatten)]
    signed: SignedBy,
    payload: String,
}

impl SignedOutcome {
    /// Signs `outcome` with `keys`' signing key.
    pub fn sign(outcome: &WireOutcome, keys: &Keys) -> Result<Vec<u8>, Error> {
        let payload = serde_json::to_string(outcome)
            .map_err(|e| Error::Internal(format!("cannot encode an outcome: {e}")))?;
        let signed = SignedBy::new(
            &keys.signer,
            OUTCOME_DOMAIN,
            &[outcome.request.as_bytes(), payload.as_bytes()],
        );
        serde_json::to_vec(&SignedOutcome { signed, payload })
            .map_err(|e| Error::Internal(format!("cannot encode an outcome: {e}")))
    }

    /// The outcome of request `id` in `bytes`, if a key of `trust` signed it for that
    /// request.
    pub fn open(id: &str, bytes: &[u8], trust: &Trust) -> Result<WireOutcome, Rejection> {
        let signed: SignedOutcome = serde_json::from_slice(bytes).map_err(|_| {
            match serde_json::from_slice::<WireOutcome>(bytes) {
                Ok(_) => Rejection::Unsigned,
                Err(_) => Rejection::Malformed("it is not an outcome".into()),
            }
        })?;
        trust.verify(
            &signed.signed,
            OUTCOME_DOMAIN,
            &[id.as_bytes(), signed.payload.as_bytes()],
        )?;
        let outcome: WireOutcome = serde_json::from_str(&signed.payload)
            .map_err(|e| Rejection::Malformed(format!("it is not an outcome ({e})")))?;
        if outcome.request != id {
            return Err(Rejection::Malformed(
                "it is the outcome of another request".into(),
            ));
        }
        Ok(outcome)
    }
}

/// A client, authenticated as `config.auth` says. A server that refuses the credentials
/// (or the TLS handshake) is an error at once; one that cannot be reached yet is retried in
/// the background, as a worker started before its server should wait for it.
async fn connect(config: &NatsConfig) -> Result<async_nats::Client, Error> {
    let urls: Vec<&str> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let what = format!("cannot reach NATS at {}", config.url);
    match config.auth.options()?.connect(urls.clone()).await {
        Ok(client) => return Ok(client),
        Err(e) => {
            use async_nats::ConnectErrorKind as Kind;
            if matches!(
                e.kind(),
                Kind::AuthorizationViolation | Kind::Authentication | Kind::Tls
            ) {
                return Err(Error::Nats(format!(
                    "{what}: {e}; check --nats-token, --nats-user/--nats-password, the nkey \
                     seed (--nats-nkey-file or DVM_NATS_NKEY), --nats-creds and the TLS \
                     options against the server's authorization settings"
                )));
            }
        }
    }
    nats!(
        &what,
        config
            .auth
            .options()?
            .retry_on_initial_connect()
            .connect(urls)
            .await
    )
}

/// The stream, outcome bucket and their settings, made if missing.
async fn setup(
    config: &NatsConfig,
) -> Result<(jetstream::Context, stream::Stream, kv::Store), Error> {
    let client = connect(config).await?;
    let js = jetstream::new(client);
    let stream = nats!(
        "cannot make the run stream (is JetStream on? start nats-server with -js)",
        js.get_or_create_stream(stream::Config {
            name: STREAM.to_string(),
            subjects: vec![SUBJECT.to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_messages: config.max_queued,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
    )?;
    let outcomes = bucket(&js, OUTCOMES, config.outcome_ttl).await?;
    Ok((js, stream, outcomes))
}

/// A key-value bucket, made if missing. The bucket's stream is made here, as the client's
/// own `create_key_value` would make it: that call first asks for account details in a shape
/// NATS 2.9 does not answer with.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    nats!(
        &format!("cannot make the bucket {name}"),
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
    )?;
    nats!(
        &format!("cannot open the bucket {name}"),
        js.get_key_value(name).await
    )
}

type Waiters = Arc<
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<WireOutcome>>>,
>;

/// A producer: submits run requests and reads their outcomes.
#[derive(Clone)]
pub struct Queue {
    js: jetstream::Context,
    outcomes: kv::Store,
    /// Whose outcomes are accepted.
    trust: Arc<Trust>,
    /// Outcomes refused because they did not verify.
    refused: Arc<AtomicU64>,
    /// Callers waiting for an outcome, by request id.
    waiters: Waiters,
    /// Stops the bucket watch when the last clone is dropped.
    _watch: Arc<WatchTask>,
}

struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Queue {
    /// Connects, making the stream and bucket if this is the first node.
    pub async fn connect(config: &NatsConfig) -> Result<Queue, Error> {
        let trust = Arc::new(config.keys()?.trust.clone());
        let (js, _, outcomes) = setup(config).await?;
        let waiters: Waiters = Arc::default();
        let refused: Arc<AtomicU64> = Arc::default();
        let watch = tokio::spawn(route_outcomes(
            outcomes.clone(),
            waiters.clone(),
            trust.clone(),
            refused.clone(),
        ));
        Ok(Queue {
            js,
            outcomes,
            trust,
            refused,
            waiters,
            _watch: Arc::new(WatchTask(watch)),
        })
    }

    /// Puts a request on the queue once the server has stored it; a full queue is
    /// [`Error::QueueFull`].
    pub async fn submit(&self, request: &RunRequest) -> Result<(), Error> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| Error::Internal(format!("cannot encode the request: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", request.id.as_str());
        let acked = async {
            self.js
                .publish_with_headers(SUBJECT, headers, payload.into())
                .await?
                .await
        }
        .await;
        match acked {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("maximum messages") => Err(Error::QueueFull(
                "the run queue is full (the stream's max_queued bound); retry later or add \
                 workers"
                    .into(),
            )),
            Err(e) => Err(Error::Nats(format!("cannot queue the run: {e}"))),
        }
    }

    /// Waits up to `timeout` for the outcome of request `id`. One watch on the whole bucket
    /// serves every waiter of this queue; each waiter also looks itself every two seconds,
    /// so an outcome stored while the connection was down (a NATS restart) is still found.
    pub async fn outcome(&self, id: &str, timeout: Duration) -> Result<WireOutcome, Error> {
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), sender);
        // The waiter goes however this ends, also when the caller stops waiting.
        struct Unregister<'a>(&'a Waiters, &'a str);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(self.1);
            }
        }
        let _unregister = Unregister(&self.waiters, id);
        let mut last_refusal = None;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Ok(Some(bytes)) = self.outcomes.get(id).await {
                    match SignedOutcome::open(id, &bytes, &self.trust) {
                        Ok(outcome) => return outcome,
                        Err(why) => {
                            if last_refusal.as_ref() != Some(&why) {
                                self.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!("the stored outcome of {id} is ignored: {why}");
                            }
                            last_refusal = Some(why);
                        }
                    }
                }
                // The watch hands over only outcomes that verify.
                tokio::select! {
                    delivered = &mut receiver => if let Ok(outcome) = delivered {
                        return outcome;
                    },
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        })
        .await;
        match waited {
            Ok(outcome) => Ok(outcome),
            Err(_) => Err(Error::Nats(format!(
                "no outcome for {id} within {} ms{}; are workers running (dvm worker --nats …)?",
                timeout.as_millis(),
                match &last_refusal {
                    Some(why) => format!(
                        " (an outcome was stored but not accepted: {why}; are the workers' keys \
                         trusted, e.g. with --trust or a shared --cache-key-file?)"
                    ),
                    None => String::new(),
                }
            ))),
        }
    }

    /// The outcome of request `id` if it is stored yet (polling instead of waiting); one
    /// that does not verify is an error.
    pub async fn try_outcome(&self, id: &str) -> Result<Option<WireOutcome>, Error> {
        match nats!("cannot read the outcome", self.outcomes.get(id).await)? {
            Some(bytes) => SignedOutcome::open(id, &bytes, &self.trust)
                .map(Some)
                .map_err(|why| {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    Error::Nats(format!("the stored outcome of {id} is not accepted: {why}"))
                }),
            None => Ok(None),
        }
    }

    /// Outcomes this queue refused because they did not verify.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Submits and waits.
    pub async fn run(&self, request: &RunRequest, timeout: Duration) -> Result<WireOutcome, Error> {
        self.submit(request).await?;
        self.outcome(&request.id, timeout).await
    }

    /// Requests waiting in the stream.
    pub async fn depth(&self) -> Result<u64, Error> {
        let mut stream = nats!(
            "cannot read the run stream",
            self.js.get_stream(STREAM).await
        )?;
        let info = nats!("cannot read the run stream", stream.info().await)?;
        Ok(info.state.messages)
    }
}

/// Hands each new outcome that verifies to its waiter (one that does not is reported and the
/// waiter keeps waiting); starts the watch again when it ends (a reconnect).
async fn route_outcomes(
    outcomes: kv::Store,
    waiters: Waiters,
    trust: Arc<Trust>,
    refused: Arc<AtomicU64>,
) {
    loop {
        if let Ok(mut watch) = outcomes.watch_all().await {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                let waited = waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains_key(&entry.key);
                if !waited {
                    continue;
                }
                let outcome = match SignedOutcome::open(&entry.key, &entry.value, &trust) {
                    Ok(outcome) => outcome,
                    Err(why) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("the outcome stored for {} is ignored: {why}", entry.key);
                        continue;
                    }
                };
                let waiter = waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&entry.key);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a worker counts, for its metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub runs: AtomicU64,
    pub redeliveries: AtomicU64,
    pub duplicates: AtomicU64,
    pub failures: AtomicU64,
    pub in_flight: AtomicU64,
    /// Requests waiting in the stream, as last seen.
    pub queue_depth: AtomicU64,
}

impl WorkerStats {
    /// Prometheus text for this worker.
    pub fn render(&self, worker: &str) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "dvm_worker_runs_total",
                "counter",
                "Runs this worker executed.",
                &self.runs,
            ),
            (
                "dvm_worker_redeliveries_total",
                "counter",
                "Requests this worker got again after another delivery.",
                &self.redeliveries,
            ),
            (
                "dvm_worker_duplicates_total",
                "counter",
                "Runs whose outcome another delivery had already stored.",
                &self.duplicates,
            ),
            (
                "dvm_worker_failures_total",
                "counter",
                "Requests that could not run (their error is the outcome).",
                &self.failures,
            ),
            (
                "dvm_worker_in_flight",
                "gauge",
                "Runs executing now.",
                &self.in_flight,
            ),
            (
                "dvm_worker_queue_depth",
                "gauge",
                "Requests waiting in the stream, as last seen.",
                &self.queue_depth,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{worker=\"{worker}\"}} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats: NatsConfig,
    /// Runs at once.
    pub concurrency: usize,
    /// The name in outcomes, logs and metrics.
    pub name: String,
    /// After a drain signal, how long in-flight runs may finish before they are handed back.
    pub drain_grace: Duration,
    /// The most a request may ask for: every limit of a request is capped at these (a
    /// request without a fuel limit gets this fuel limit, if any).
    pub max: Limits,
}

/// `requested`, with every limit capped at `max`.
pub fn cap_limits(requested: &Limits, max: &Limits) -> Limits {
    Limits {
        deadline: requested.deadline.min(max.deadline),
        fuel: match (requested.fuel, max.fuel) {
            (Some(fuel), Some(cap)) => Some(fuel.min(cap)),
            (None, cap) => cap,
            (fuel, None) => fuel,
        },
        memory_bytes: requested.memory_bytes.min(max.memory_bytes),
        stdout_bytes: requested.stdout_bytes.min(max.stdout_bytes),
        stderr_bytes: requested.stderr_bytes.min(max.stderr_bytes),
        output_overflow: requested.output_overflow,
        table_elements: requested.table_elements.min(max.table_elements),
        disk_bytes: requested.disk_bytes.min(max.disk_bytes),
        files: requested.files.min(max.files),
        open_files: requested.open_files.min(max.open_files),
    }
}

/// Pulls requests and runs them until `shutdown` resolves, then stops pulling, lets in-flight
/// runs finish for the grace period and hands back (naks) what is left.
pub async fn work(
    dvm: Dvm,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.nats.keys()?;
    let (js, stream, outcomes) = setup(&config.nats).await?;
    let consumer: consumer::PullConsumer = nats!(
        "cannot make the worker consumer",
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.nats.ack_wait,
                    max_deliver: config.nats.max_deliver,
                    ..Default::default()
                },
            )
            .await
    )?;
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let cancels: Arc<std::sync::Mutex<Vec<crate::CancelHandle>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    // The signal, as a token that can be asked any number of times.
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    let signal = async move {
        shutdown.await;
        stopping.cancel();
    };
    tokio::pin!(signal);
    let fetching = async {
        while !stop.is_cancelled() {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some(_) = tasks.join_next() => continue,
                }
            }
            let batch = consumer
                .fetch()
                .max_messages(free)
                .expires(Duration::from_secs(1))
                .messages();
            let mut messages = tokio::select! {
                () = stop.cancelled() => break,
                batch = batch => match batch {
                    Ok(messages) => messages,
                    Err(e) => {
                        tracing::warn!("fetching runs: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            // The batch ends by itself within its second; what it delivers after a drain
            // signal goes straight back to the queue.
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { continue };
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    () = stop.cancelled() => None,
                };
                let Some(permit) = permit.filter(|_| !stop.is_cancelled()) else {
                    let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                    continue;
                };
                tasks.spawn(handle(
                    dvm.clone(),
                    config.clone(),
                    stats.clone(),
                    outcomes.clone(),
                    cancels.clone(),
                    message,
                    permit,
                ));
            }
            while tasks.try_join_next().is_some() {}
            if let Ok(info) = consumer.clone().info().await.map(|i| i.num_pending) {
                stats.queue_depth.store(info, Ordering::Relaxed);
            }
        }
    };
    tokio::join!(fetching, &mut signal);
    // Drain: finish what runs, within the grace; then cancel (the handlers hand their
    // requests back).
    let drained = tokio::time::timeout(config.drain_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        for cancel in cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            cancel.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }
    // The last acks and naks go out before the process ends.
    let _ = js.client().flush().await;
    Ok(())
}

/// Runs one request and stores its outcome, then acknowledges.
async fn handle(
    dvm: Dvm,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    outcomes: kv::Store,
    cancels: Arc<std::sync::Mutex<Vec<crate::CancelHandle>>>,
    message: jetstream::Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let delivery = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
    if delivery > 1 {
        stats.redeliveries.fetch_add(1, Ordering::Relaxed);
    }
    let Some(keys) = config.nats.keys.clone() else {
        return;
    };
    let request: RunRequest = match serde_json::from_slice::<RunRequest>(&message.payload) {
        Ok(request) if valid_request_id(&request.id) => request,
        Ok(_) => {
            tracing::warn!("dropping a run request whose id is not a request id");
            let _ = message.ack_with(jetstream::AckKind::Term).await;
            return;
        }
        Err(e) => {
            tracing::warn!("dropping a request that is not a run request: {e}");
            let _ = message.ack_with(jetstream::AckKind::Term).await;
            return;
        }
    };
    // An earlier delivery may have stored the outcome and died before acknowledging; an
    // outcome there that does not verify is not an answer, and is replaced below.
    if let Ok(Some(stored)) = outcomes.get(&request.id).await
        && SignedOutcome::open(&request.id, stored.as_ref(), &keys.trust).is_ok()
    {
        stats.duplicates.fetch_add(1, Ordering::Relaxed);
        let _ = message.double_ack().await;
        return;
    }
    eprintln!(
        "dvm worker {}: running {} (delivery {delivery})",
        config.name, request.id
    );
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let cancel = crate::CancelHandle::new();
    cancels
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(cancel.clone());
    // Progress acks keep the request ours while it runs.
    let progress = {
        let every = (config.nats.ack_wait / 3).max(Duration::from_millis(100));
        let message = message.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = message.ack_with(jetstream::AckKind::Progress).await;
            }
        })
    };
    let ran = {
        let request = request.clone();
        let cancel = cancel.clone();
        let max = config.max.clone();
        tokio::task::spawn_blocking(move || execute(&dvm, &request, &max, cancel))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("the run panicked: {e}"))))
    };
    progress.abort();
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    cancels
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|c| !c.same(&cancel));
    if cancel.is_cancelled() {
        // Drained: hand the request back for another worker.
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
        return;
    }
    if let Err(error) = &ran {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        // A failure of this worker (not of the request) may pass: another delivery tries
        // again, until the last one, whose error becomes the answer.
        if !error.is_user_error() && (delivery as i64) < config.nats.max_deliver {
            tracing::warn!("{} failed here, handing it back: {error}", request.id);
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    }
    stats.runs.fetch_add(1, Ordering::Relaxed);
    let wire = WireOutcome::of(&request.id, &config.name, delivery, ran);
    let bytes: bytes::Bytes = match SignedOutcome::sign(&wire, &keys) {
        Ok(bytes) => bytes.into(),
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    // First writer wins: a duplicate execution keeps the stored answer, unless what is
    // stored does not verify (a forgery), which this answer replaces.
    match outcomes.create(&request.id, bytes.clone()).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let genuine = matches!(
                outcomes.get(&request.id).await,
                Ok(Some(stored))
                    if SignedOutcome::open(&request.id, stored.as_ref(), &keys.trust).is_ok()
            );
            if genuine {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!(
                    "the outcome stored for {} does not verify; replacing it",
                    request.id
                );
                if let Err(e) = outcomes.put(&request.id, bytes).await {
                    tracing::warn!("cannot store the outcome of {}: {e}", request.id);
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return;
                }
            }
        }
        Err(e) => {
            // Not stored: leave the request unacknowledged so it is delivered again.
            tracing::warn!("cannot store the outcome of {}: {e}", request.id);
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    }
    if let Err(e) = message.double_ack().await {
        tracing::warn!("cannot acknowledge {}: {e}", request.id);
    }
}

/// Runs a request in a local sandbox (on the calling, blocking thread), its limits capped at
/// `max`.
fn execute(
    dvm: &Dvm,
    request: &RunRequest,
    max: &Limits,
    cancel: crate::CancelHandle,
) -> Result<Outcome, Error> {
    let runtime = dvm.runtime(&request.runtime)?;
    let limits = cap_limits(&Limits::from(&request.limits), max);
    limits.validate()?;
    let mut input = RunInput {
        args: request.args.clone(),
        env: request.env.clone(),
        stdin: request.stdin.clone().into_bytes(),
        limits,
        cancel: Some(cancel),
        deterministic: request.seed.map(|seed| crate::Determinism { seed }),
        ..RunInput::default()
    };
    if !request.files.is_empty() {
        let workspace = crate::Workspace::new()?;
        for (path, encoded) in &request.files {
            workspace.write(path, &decode(encoded))?;
        }
        input.workspace = Some(workspace);
    }
    if !request.requirements.is_empty() {
        input.packages = Some(runtime.install_packages(&crate::PackageRequest {
            requirements: request.requirements.clone(),
            ..crate::PackageRequest::default()
        })?);
    }
    runtime.run_script(&request.name, request.code.as_bytes(), &input)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_caps_every_limit_at_its_maxima() {
        let max = Limits {
            deadline: Duration::from_secs(2),
            fuel: Some(1000),
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            stdout_bytes: 10,
            stderr_bytes: 10,
            ..Limits::default()
        };
        let asked = Limits {
            deadline: Duration::from_secs(3600),
            fuel: None,
            memory_bytes: 1 << 32,
            disk_bytes: u64::MAX,
            stdout_bytes: 1 << 30,
            stderr_bytes: 1 << 30,
            files: u64::MAX,
            open_files: u64::MAX,
            table_elements: u64::MAX,
            ..Limits::default()
        };
        let capped = cap_limits(&asked, &max);
        assert_eq!(capped.deadline, max.deadline);
        assert_eq!(capped.fuel, Some(1000));
        assert_eq!(capped.memory_bytes, max.memory_bytes);
        assert_eq!(capped.disk_bytes, max.disk_bytes);
        assert_eq!((capped.stdout_bytes, capped.stderr_bytes), (10, 10));
        assert_eq!(capped.files, max.files);
        assert_eq!(capped.open_files, max.open_files);
        assert_eq!(capped.table_elements, max.table_elements);
        let small = Limits {
            deadline: Duration::from_millis(5),
            fuel: Some(3),
            ..Limits::default()
        };
        let kept = cap_limits(&small, &max);
        assert_eq!((kept.deadline, kept.fuel), (small.deadline, Some(3)));
    }

    #[test]
    fn only_a_trusted_signature_for_the_same_request_opens_an_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::home(dir.path()).unwrap();
        let wire = WireOutcome::of("r1", "w", 1, Err(Error::InvalidInput("x".into())));
        let signed = SignedOutcome::sign(&wire, &keys).unwrap();
        assert!(SignedOutcome::open("r1", &signed, &keys.trust).is_ok());
        assert!(SignedOutcome::open("r2", &signed, &keys.trust).is_err());
        assert!(matches!(
            SignedOutcome::open("r1", &signed, &Trust::default()),
            Err(Rejection::Untrusted(_))
        ));
        let unsigned = serde_json::to_vec(&wire).unwrap();
        assert_eq!(
            SignedOutcome::open("r1", &unsigned, &keys.trust).unwrap_err(),
            Rejection::Unsigned
        );
        assert!(!valid_request_id("a.>"));
        assert!(valid_request_id(&crate::server::new_id()));
    }

    #[test]
    fn limits_and_outcomes_survive_the_wire() {
        let limits = Limits {
            deadline: Duration::from_millis(1500),
            fuel: Some(7),
            output_overflow: OutputOverflow::Stop,
            ..Limits::default()
        };
        let back = Limits::from(&WireLimits::from(&limits));
        assert_eq!(back.deadline, limits.deadline);
        assert_eq!(back.fuel, Some(7));
        assert_eq!(back.output_overflow, OutputOverflow::Stop);
        assert_eq!(back.memory_bytes, limits.memory_bytes);

        let outcome = Outcome {
            status: Status::Error,
            exit_code: Some(3),
            stdout: vec![0, 159, 146, 150],
            stderr: b"err".to_vec(),
            stdout_bytes: 4,
            stderr_bytes: 3,
            truncated: Truncated::default(),
            limit: None,
            fuel_used: 10,
            duration: Duration::from_millis(12),
            memory_peak_bytes: 65536,
            trap: None,
            files: Vec::new(),
            cache: crate::results::CacheStatus::Miss,
            cache_key: Some("k".into()),
        };
        let wire = WireOutcome::of("r", "w", 2, Ok(outcome.clone()));
        let json = serde_json::to_vec(&wire).unwrap();
        let back: WireOutcome = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.delivery, 2);
        let back = back.into_outcome().unwrap();
        assert_eq!(
            back.stdout, outcome.stdout,
            "bytes that are not UTF-8 survive"
        );
        assert_eq!(back.exit_code, Some(3));
        assert_eq!(back.cache_key.as_deref(), Some("k"));
        let failed = WireOutcome::of("r", "w", 1, Err(Error::InvalidInput("no".into())));
        assert!(matches!(failed.into_outcome(), Err(Error::InvalidInput(_))));
        let broken = WireOutcome::of("r", "w", 1, Err(Error::Internal("disk".into())));
        assert!(matches!(broken.into_outcome(), Err(Error::Remote(_))));
    }
}
