//! Connecting to NATS: authentication (token, user, nkey, credentials, TLS), the checks on
//! secret files, and the stream and buckets every node makes if missing.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::error::Error;

use super::{NatsConfig, OUTCOMES, STREAM, SUBJECT};

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

/// A client, authenticated as `config.auth` says. A server that refuses the credentials
/// (or the TLS handshake) is an error at once; one that cannot be reached yet is retried in
/// the background, as a worker started before its server should wait for it.
pub(super) async fn connect(config: &NatsConfig) -> Result<async_nats::Client, Error> {
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
                return Err(crate::error::NatsError::Refused {
                    what,
                    source: e.into(),
                }
                .into());
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
pub(super) async fn setup(
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
pub(super) async fn bucket(
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
