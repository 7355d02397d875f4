//! How `serve --nats` and `worker` reach NATS: the connection and authentication flags, and
//! the node's `Dvm` with its result cache shared through JetStream.

use std::path::PathBuf;
use std::time::Duration;

use crate::profile::parse_duration;
use crate::{Config, Dvm, Error};

/// How to reach NATS, shared by `serve --nats` and `worker`. One way of authenticating
/// at a time (token, user, nkey seed or credentials file); TLS combines with any.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("nats_auth").multiple(false)))]
pub(super) struct NatsArgs {
    /// Requests the run stream holds at most, when this node makes it; past it a submit is
    /// refused.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queued: i64,
    /// How long a worker may hold a request without an ack before it is redelivered (workers
    /// send progress acks while running).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// Keep the result cache on this machine instead of sharing it through JetStream.
    #[arg(long)]
    pub(super) local_cache: bool,
    /// Authenticate to NATS with this token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DVM_NATS_TOKEN",
        hide_env_values = true,
        group = "nats_auth"
    )]
    nats_token: Option<String>,
    /// Authenticate to NATS as this user (with --nats-password).
    #[arg(
        long,
        value_name = "USER",
        requires = "nats_password",
        group = "nats_auth"
    )]
    nats_user: Option<String>,
    /// The password of --nats-user.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "DVM_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    nats_password: Option<String>,
    /// Connect to NATS only over TLS.
    #[arg(long)]
    nats_tls: bool,
    /// PEM file of the certificate authorities of the NATS server's certificate (implies
    /// --nats-tls).
    #[arg(long, value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// PEM file of this node's client certificate for NATS (with --nats-key; implies
    /// --nats-tls).
    #[arg(long, value_name = "FILE", requires = "nats_key")]
    nats_cert: Option<PathBuf>,
    /// PEM file of the key of --nats-cert.
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
    /// Authenticate to NATS with the user nkey seed (`SU…`) in this file, which group and
    /// others must not be able to read (chmod 600). The seed itself may instead be in the
    /// environment variable DVM_NATS_NKEY (never on the command line).
    #[arg(long, value_name = "PATH", group = "nats_auth")]
    nats_nkey_file: Option<PathBuf>,
    /// Authenticate to NATS with this credentials file (a user JWT and its nkey seed, as
    /// `nsc` writes them), which group and others must not be able to read (chmod 600).
    #[arg(long, value_name = "PATH", group = "nats_auth")]
    nats_creds: Option<PathBuf>,
    /// The deployment's signing key, shared by its nodes (`dvm cache keygen FILE` makes
    /// one): outcomes and cache entries are signed with it and its signatures are trusted.
    /// Without it a node signs with its own key in $DVM_HOME.
    #[arg(long, value_name = "FILE", env = "DVM_CACHE_KEY_FILE")]
    cache_key_file: Option<PathBuf>,
    /// Also accept outcomes and cache entries signed by this public key (repeatable; `dvm
    /// cache key` prints a node's).
    #[arg(long = "trust", value_name = "PUBKEY")]
    trust: Vec<crate::results::PublicKey>,
}

impl NatsArgs {
    pub(super) fn config(
        &self,
        url: &str,
        config: &Config,
    ) -> Result<crate::nats::NatsConfig, Error> {
        let nkey = self.nkey()?;
        let creds = self
            .nats_creds
            .as_deref()
            .map(crate::nats::NatsCreds::from_file)
            .transpose()?;
        let keys = crate::results::Keys::node_of_config(
            config,
            self.cache_key_file.as_deref(),
            &self.trust,
        )?;
        Ok(crate::nats::NatsConfig {
            max_queued: self.max_queued,
            ack_wait: self.ack_wait,
            ..crate::nats::NatsConfig::new(url)
        }
        .with_keys(keys)
        .with_auth(crate::nats::NatsAuth {
            token: self.nats_token.clone().filter(|t| !t.is_empty()),
            user: self.nats_user.clone().zip(self.nats_password.clone()),
            require_tls: self.nats_tls,
            root_ca: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
            nkey,
            creds,
        }))
    }

    /// The nkey seed from --nats-nkey-file or DVM_NATS_NKEY. The variable counts as a way
    /// of authenticating: with another one it is a usage error naming both.
    fn nkey(&self) -> Result<Option<crate::nats::NkeySeed>, Error> {
        let Some(value) = std::env::var_os(NKEY_ENV).filter(|v| !v.is_empty()) else {
            return self
                .nats_nkey_file
                .as_deref()
                .map(crate::nats::NkeySeed::from_file)
                .transpose();
        };
        let other = [
            (self.nats_nkey_file.is_some(), "--nats-nkey-file"),
            (
                self.nats_token.is_some(),
                "--nats-token (or DVM_NATS_TOKEN)",
            ),
            (self.nats_user.is_some(), "--nats-user"),
            (self.nats_creds.is_some(), "--nats-creds"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name));
        if let Some(other) = other {
            return Err(Error::InvalidInput(format!(
                "{NKEY_ENV} and {other} are two ways of authenticating to NATS; use one of \
                 them (unset {NKEY_ENV} or drop {other})"
            )));
        }
        let text = value
            .into_string()
            .map_err(|_| Error::InvalidInput(format!("{NKEY_ENV} is not a NATS user nkey seed")))?;
        crate::nats::NkeySeed::parse(&text, NKEY_ENV).map(Some)
    }
}

/// The environment variable that may hold a NATS user nkey seed.
const NKEY_ENV: &str = "DVM_NATS_NKEY";

/// A Dvm whose result cache is shared through JetStream, unless `local` says otherwise.
/// Must run inside the async runtime (the backend keeps its handle).
pub(super) async fn nats_dvm(
    config: Config,
    nats: &crate::nats::NatsConfig,
    local: bool,
) -> Result<Dvm, Error> {
    if local {
        return Dvm::new(config);
    }
    let backend = crate::nats::JetStreamBackend::connect(nats).await?;
    let bound = config.result_cache_bytes;
    let keys = nats
        .keys
        .clone()
        .ok_or_else(|| Error::Internal("a node's result cache needs its signing keys".into()))?;
    Dvm::with_results(
        config,
        crate::results::ResultCache::new(Box::new(backend), bound, keys),
    )
}
