//! Allow-listed HTTP: the guest's requests go through a client on the host that reaches only
//! the hosts the run allows. Names are resolved here, and a name resolving to a private,
//! loopback or link-local address is refused: such an address is reached only by a URL
//! that writes it, allowed by an entry that writes it too (with its port). Each
//! request is bounded (its own timeout, a response cap, a per-run budget, the run's deadline
//! and cancellation) and recorded in the outcome's `net`. The host's proxies, credentials
//! and cookies are never used.

// Without the `net` feature nothing is sent, so the checks on a request are not reached.
#![cfg_attr(not(feature = "net"), allow(dead_code))]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::outcome::NetRequest;

/// How long one request may take unless the policy says otherwise.
pub const DEFAULT_NET_TIMEOUT: Duration = Duration::from_secs(30);

/// The host part of an allowed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// This name exactly (lower case).
    Name(String),
    /// Any name under this suffix (`*.example.com` keeps `.example.com`), not the bare
    /// domain itself.
    Under(String),
    /// This address, written literally: it may be private or loopback.
    Address(IpAddr),
}

/// One `HOST[:PORT]` entry of an allow-list: `example.com`, `*.example.com:443`,
/// `127.0.0.1:8080`, `[::1]:8080`. Without a port, every port of the host is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: HostMatch,
    port: Option<u16>,
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostMatch::Name(name) => f.write_str(name)?,
            HostMatch::Under(suffix) => write!(f, "*{suffix}")?,
            HostMatch::Address(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostMatch::Address(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Whether `name` is a DNS name of letters, digits and hyphens (lower case by now).
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl std::str::FromStr for AllowedHost {
    type Err = Error;

    fn from_str(entry: &str) -> Result<AllowedHost, Error> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "`{}` cannot be an allowed host: {why} (write HOST, HOST:PORT, *.DOMAIN, an \
                 address such as 127.0.0.1:8080 or [::1]:8080)",
                entry.escape_debug()
            ))
        };
        let lower = entry.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = if let Some(rest) = lower.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a `[` address has no `]`"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("something follows the `]`"))?,
                ),
            };
            let ip: std::net::Ipv6Addr = inside
                .parse()
                .map_err(|_| bad("not an IPv6 address in `[]`"))?;
            (HostMatch::Address(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match lower.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (lower.as_str(), None),
            };
            let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
                HostMatch::Address(IpAddr::V4(ip))
            } else if let Some(suffix) = host.strip_prefix("*.") {
                if !is_dns_name(suffix) || !suffix.contains('.') {
                    return Err(bad(
                        "a wildcard covers the names under a domain of two labels or more",
                    ));
                }
                HostMatch::Under(format!(".{suffix}"))
            } else if is_dns_name(host) {
                HostMatch::Name(host.to_string())
            } else {
                return Err(bad("not a host name"));
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return Err(bad("the port is not a number from 1 to 65535")),
            },
        };
        Ok(AllowedHost { host, port })
    }
}

impl serde::Serialize for AllowedHost {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AllowedHost {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entry = String::deserialize(deserializer)?;
        entry.parse().map_err(serde::de::Error::custom)
    }
}

impl AllowedHost {
    /// Whether this entry allows `host` (a lower-case name, or an address as the URL
    /// writes it) on `port`.
    fn allows(&self, host: &UrlHost, port: u16) -> bool {
        if self.port.is_some_and(|allowed| allowed != port) {
            return false;
        }
        match (&self.host, host) {
            (HostMatch::Name(allowed), UrlHost::Name(name)) => allowed == name,
            (HostMatch::Under(suffix), UrlHost::Name(name)) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
            (HostMatch::Address(allowed), UrlHost::Address(ip)) => allowed == ip,
            _ => false,
        }
    }

    /// Whether every host and port this entry allows, `outer` allows too (a server lets
    /// each request allow some of what its operator allowed).
    pub fn within(&self, outer: &AllowedHost) -> bool {
        let ports = match (self.port, outer.port) {
            (_, None) => true,
            (Some(port), Some(allowed)) => port == allowed,
            (None, Some(_)) => false,
        };
        ports
            && match (&self.host, &outer.host) {
                (HostMatch::Name(name), HostMatch::Name(allowed)) => name == allowed,
                (HostMatch::Name(name), HostMatch::Under(suffix)) => {
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }
                (HostMatch::Under(inner), HostMatch::Under(suffix)) => {
                    inner.ends_with(suffix.as_str())
                }
                (HostMatch::Address(ip), HostMatch::Address(allowed)) => ip == allowed,
                _ => false,
            }
    }
}

/// The host of a request's URL, as the allow-list compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum UrlHost {
    Name(String),
    Address(IpAddr),
}

/// An IPv4-mapped IPv6 address as its IPv4 address; others as they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an address a sandbox must not reach unless it is allowed by address:
/// loopback, private, link-local, shared (carrier NAT), unspecified, broadcast, multicast,
/// documentation and reserved ranges, unique-local IPv6, and IPv4 inside IPv6 forms.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 192 && b == 88 && v4.octets()[2] == 99)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && v6.segments()[1] == 0xdb8
                // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
                // carry an IPv4 address the network may route to.
                || v6.segments()[..6] == [0; 6]
                || v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || v6.segments()[..3] == [0x64, 0xff9b, 1]
                || first == 0x2002
                // IPv4-translated (::ffff:0:a.b.c.d) and Teredo (2001::/32).
                || v6.segments()[..6] == [0, 0, 0, 0, 0xffff, 0]
                || (first == 0x2001 && v6.segments()[1] == 0)
        }
    }
}

/// One HTTP exchange as recorded: what the guest asked and what came back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetExchange {
    pub method: String,
    pub url: String,
    /// blake3 of the request body (hex).
    pub request_body: String,
    pub status: u16,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The response body, in base64.
    #[serde(default)]
    pub body: String,
}

/// The exchanges of a run, in order: written after a recorded run, answered from in a
/// replayed one (see [`NetPolicy::replaying`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRecording {
    pub exchanges: Vec<NetExchange>,
}

/// The largest recording dvm reads.
pub const MAX_RECORDING_BYTES: u64 = 256 << 20;

impl NetRecording {
    /// Reads a recording written by a recorded run. It is input like any other: parsed,
    /// bounded in size, and nothing in it names a host path.
    pub fn read(path: &std::path::Path) -> Result<NetRecording, Error> {
        let unreadable = |why: String| {
            Error::InvalidInput(format!(
                "cannot read the recording {}: {why}",
                path.display()
            ))
        };
        let bytes = match crate::fs::read_regular_file(path, MAX_RECORDING_BYTES) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(size)) => {
                return Err(unreadable(format!(
                    "it is {size} bytes, over the cap of {MAX_RECORDING_BYTES}"
                )));
            }
            Err(e) => return Err(unreadable(e.to_string())),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a recording of HTTP exchanges: {e}",
                path.display()
            ))
        })
    }

    /// Its content hash, which a replayed run's result-cache key includes.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex().to_string()
    }
}

/// Where a recorded run's exchanges go. It holds at most what a replay reads back
/// ([`MAX_RECORDING_BYTES`]): a response that would take it past that fails instead of
/// being recorded, so a guest cannot make the host hold more.
#[derive(Clone)]
pub struct NetRecorder {
    /// The exchanges and the bytes they add to the written recording.
    held: Arc<std::sync::Mutex<(NetRecording, u64)>>,
    cap: u64,
}

impl Default for NetRecorder {
    fn default() -> Self {
        NetRecorder {
            held: Arc::default(),
            cap: MAX_RECORDING_BYTES,
        }
    }
}

impl NetRecorder {
    /// The exchanges recorded so far.
    pub fn recording(&self) -> NetRecording {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    fn push(&self, exchange: NetExchange) -> Result<(), NetFailure> {
        // What the exchange adds to the written JSON, near enough: its strings and a
        // little for the punctuation.
        let size = [
            &exchange.method,
            &exchange.url,
            &exchange.reason,
            &exchange.body,
        ]
        .iter()
        .map(|text| text.len() as u64)
        .chain(
            exchange
                .headers
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64 + 8),
        )
        .sum::<u64>()
            + exchange.request_body.len() as u64
            + 128;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.1.saturating_add(size) > self.cap {
            return Err(NetFailure::Failed(format!(
                "recording this response would make the recording larger than the {} bytes \
                 a replay reads; record fewer or smaller responses",
                self.cap
            )));
        }
        held.1 += size;
        held.0.exchanges.push(exchange);
        Ok(())
    }
}

/// A recording being replayed: each exchange answers once, in order among those that
/// match (method, URL and request body).
struct Replay {
    hash: String,
    left: std::sync::Mutex<Vec<NetExchange>>,
}

/// Resolves a host name to its addresses (the system's resolver unless a test gives one).
pub type Resolver = Arc<dyn Fn(&str) -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

/// What a run may reach over HTTP, and the bounds each request is held to.
#[derive(Clone)]
pub struct NetPolicy {
    allow: Vec<AllowedHost>,
    /// Requests one run may make; later ones are refused (the guest gets an error).
    pub max_requests: u32,
    /// The largest request body the guest may send.
    pub max_request_bytes: u64,
    /// The largest response body handed back; a larger one is an error for the guest.
    pub max_response_bytes: u64,
    /// Each request's own time limit; the run's deadline bounds it too.
    pub timeout: Duration,
    resolver: Option<Resolver>,
    recorder: Option<NetRecorder>,
    replay: Option<Arc<Replay>>,
    #[cfg(feature = "net")]
    client: Arc<std::sync::OnceLock<Result<reqwest::blocking::Client, String>>>,
}

impl std::fmt::Debug for NetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPolicy")
            .field("allow", &self.allow)
            .field("max_requests", &self.max_requests)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NetPolicy {
    /// A policy allowing `allow` (each `HOST[:PORT]`, see [`AllowedHost`]), with the default
    /// bounds: 100 requests, 1 MiB per request body, 10 MiB per response body, 30 s each.
    pub fn new(allow: Vec<AllowedHost>) -> Result<NetPolicy, Error> {
        if allow.is_empty() {
            return Err(Error::InvalidInput(
                "allowing the network needs at least one HOST[:PORT]".into(),
            ));
        }
        Ok(NetPolicy {
            allow,
            max_requests: 100,
            max_request_bytes: 1 << 20,
            max_response_bytes: 10 << 20,
            timeout: DEFAULT_NET_TIMEOUT,
            resolver: None,
            recorder: None,
            replay: None,
            #[cfg(feature = "net")]
            client: Arc::default(),
        })
    }

    /// The same policy, keeping each exchange (with its response body) in the returned
    /// recorder as well.
    pub fn recording(mut self) -> (NetPolicy, NetRecorder) {
        let recorder = NetRecorder::default();
        self.recorder = Some(recorder.clone());
        (self, recorder)
    }

    /// The same policy answering from `recording` and never from the network: a request
    /// that is not in it (or was answered already as often as it was recorded) is refused.
    /// A replayed run repeats, so it may be deterministic and cached (the recording's hash
    /// is part of its key).
    pub fn replaying(mut self, recording: NetRecording) -> NetPolicy {
        self.replay = Some(Arc::new(Replay {
            hash: recording.hash(),
            left: std::sync::Mutex::new(recording.exchanges),
        }));
        self
    }

    /// Whether a replayed run can be answered from, and kept in, the result cache: it
    /// replays and does not record.
    pub fn repeats(&self) -> bool {
        self.replay.is_some() && self.recorder.is_none()
    }

    /// The hash of the recording it replays, if it replays one.
    pub fn replay_hash(&self) -> Option<&str> {
        self.replay.as_ref().map(|replay| replay.hash.as_str())
    }

    /// Parses each entry of `allow` (see [`AllowedHost`]).
    pub fn parse<S: AsRef<str>>(allow: impl IntoIterator<Item = S>) -> Result<NetPolicy, Error> {
        let allow = allow
            .into_iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<AllowedHost>, Error>>()?;
        NetPolicy::new(allow)
    }

    /// The same policy resolving names with `resolver` instead of the system's.
    pub fn with_resolver(mut self, resolver: Resolver) -> NetPolicy {
        self.resolver = Some(resolver);
        #[cfg(feature = "net")]
        {
            self.client = Arc::default();
        }
        self
    }

    pub fn allowed(&self) -> &[AllowedHost] {
        &self.allow
    }

    /// Why `host` on `port` may not be reached, if it may not.
    fn check_host(&self, host: &UrlHost, port: u16) -> Result<(), String> {
        if self.allow.iter().any(|entry| entry.allows(host, port)) {
            return Ok(());
        }
        let shown = match host {
            UrlHost::Name(name) => name.clone(),
            UrlHost::Address(IpAddr::V6(ip)) => format!("[{ip}]"),
            UrlHost::Address(ip) => ip.to_string(),
        };
        Err(format!(
            "{shown}:{port} is not an allowed host (allowed: {})",
            self.allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The addresses of `name` a request may connect to: never internal ones (those are
    /// reached by address, under an entry of that address). An error when none is left.
    fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let found = match &self.resolver {
            Some(resolver) => resolver(name),
            None => std::net::ToSocketAddrs::to_socket_addrs(&(name, 0))
                .map(|addrs| addrs.map(|addr| addr.ip()).collect()),
        }
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
        let mut refused = None;
        let kept: Vec<IpAddr> = found
            .into_iter()
            .filter(|ip| {
                let ok = !is_internal(*ip);
                if !ok {
                    refused = Some(*ip);
                }
                ok
            })
            .collect();
        match (kept.is_empty(), refused) {
            (false, _) => Ok(kept),
            (true, Some(ip)) => Err(format!(
                "{name} resolves to {ip}, an internal address: write the address in the URL \
                 and allow it (e.g. --allow-net {}) to reach it",
                match ip {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                }
            )),
            (true, None) => Err(format!("{name} has no address")),
        }
    }
}

/// The network a run or turn may use, and its requests so far.
#[derive(Default)]
pub(crate) struct NetDoor {
    policy: Option<Arc<NetPolicy>>,
    requests: Vec<NetRequest>,
    over_budget_recorded: bool,
}

impl NetDoor {
    pub(crate) fn new(policy: Option<Arc<NetPolicy>>) -> NetDoor {
        NetDoor {
            policy,
            requests: Vec::new(),
            over_budget_recorded: false,
        }
    }

    pub(crate) fn policy(&self) -> Option<&Arc<NetPolicy>> {
        self.policy.as_ref()
    }

    pub(crate) fn made(&self) -> usize {
        self.requests.len()
    }

    /// Keeps `request` in the run's record, its error cut to 512 characters. Past the
    /// budget only the first refusal is kept: a guest looping on refused requests does not
    /// grow the record.
    pub(crate) fn record(&mut self, mut request: NetRequest, over_budget: bool) {
        if over_budget && self.over_budget_recorded {
            return;
        }
        self.over_budget_recorded |= over_budget;
        if let Some(error) = &mut request.error
            && error.chars().count() > 512
        {
            *error = error.chars().take(509).collect::<String>() + "...";
        }
        self.requests.push(request);
    }

    /// The requests so far, at the end of a run or turn; the policy is unbound.
    pub(crate) fn take(&mut self) -> Vec<NetRequest> {
        self.policy = None;
        self.over_budget_recorded = false;
        std::mem::take(&mut self.requests)
    }
}

/// One request the guest asks for.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The guest's own timeout, within the policy's.
    pub timeout: Option<Duration>,
}

/// The host's answer to one request.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How a request failed, as the guest hears of it.
#[derive(Debug)]
pub(crate) enum NetFailure {
    /// Refused before anything was sent (host, address, scheme, size, budget).
    Refused(String),
    /// The request's own time ran out.
    Timeout(String),
    /// The connection or the exchange failed.
    Failed(String),
}

impl NetFailure {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            NetFailure::Refused(_) => "refused",
            NetFailure::Timeout(_) => "timeout",
            NetFailure::Failed(_) => "failed",
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            NetFailure::Refused(m) | NetFailure::Timeout(m) | NetFailure::Failed(m) => m,
        }
    }
}

/// Request headers the guest may not set: the host writes them, or they would reach past
/// the allowed host (proxies) or reuse the host's connection state.
const HOST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "expect",
];

/// The most request headers a guest may send, and their bytes in all.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 64 << 10;

#[cfg(feature = "net")]
mod client {
    use std::io::Read;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{
        HOST_HEADERS, HttpRequest, HttpResponse, MAX_HEADER_BYTES, MAX_HEADERS, NetFailure,
        NetPolicy, UrlHost,
    };

    /// Resolves names for reqwest through the policy, so the addresses a connection uses
    /// are the ones checked (no second lookup an attacker's DNS could answer differently).
    struct PolicyResolver(NetPolicy);

    impl reqwest::dns::Resolve for PolicyResolver {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let policy = self.0.clone();
            let name = name.as_str().to_string();
            Box::pin(async move {
                // The system's resolver blocks: off the client's only runtime thread.
                let addrs = tokio::task::spawn_blocking(move || policy.resolve(&name))
                    .await
                    .map_err(|e| format!("the lookup failed: {e}"))??;
                let addrs: reqwest::dns::Addrs =
                    Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                Ok(addrs)
            })
        }
    }

    fn client(policy: &NetPolicy) -> Result<reqwest::blocking::Client, NetFailure> {
        policy
            .client
            .get_or_init(|| {
                // As the model clients do: rustls with ring, installed once per process.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut resolver_policy = policy.clone();
                resolver_policy.client = Arc::default();
                reqwest::blocking::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(PolicyResolver(resolver_policy)))
                    .user_agent(concat!("dvm/", env!("CARGO_PKG_VERSION")))
                    .timeout(None)
                    .build()
                    .map_err(|e| format!("cannot make an HTTP client: {e}"))
            })
            .clone()
            .map_err(NetFailure::Failed)
    }

    /// Checks `request` against `policy` and sends it, waiting at most `timeout`.
    pub(crate) fn exchange(
        policy: &NetPolicy,
        request: HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, NetFailure> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| NetFailure::Refused(format!("`{}` is not a URL: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NetFailure::Refused(format!(
                "only http and https are allowed, not `{}:`",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(NetFailure::Refused(
                "credentials in a URL are refused: send an Authorization header".into(),
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => UrlHost::Name(name.to_ascii_lowercase()),
            Some(url::Host::Ipv4(ip)) => UrlHost::Address(ip.into()),
            Some(url::Host::Ipv6(ip)) => UrlHost::Address(ip.into()),
            None => return Err(NetFailure::Refused("the URL has no host".into())),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        policy
            .check_host(&host, port)
            .map_err(NetFailure::Refused)?;
        if let UrlHost::Name(name) = &host {
            // Refused early with a clear message; the client's resolver checks again.
            policy.resolve(name).map_err(NetFailure::Refused)?;
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            NetFailure::Refused(format!("`{}` is not an HTTP method", request.method))
        })?;
        if request.headers.len() > MAX_HEADERS
            || request
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
                > MAX_HEADER_BYTES
        {
            return Err(NetFailure::Refused(format!(
                "at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all"
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if HOST_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            let name = reqwest::header::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| NetFailure::Refused(format!("`{name}` is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                NetFailure::Refused(format!("the value of header `{name}` is not allowed"))
            })?;
            headers
                .try_append(name, value)
                .map_err(|_| NetFailure::Refused("too many request headers".into()))?;
        }
        let mut builder = client(policy)?
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let failed = |e: reqwest::Error| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                message = format!("{message}: {inner}");
                source = inner.source();
            }
            if e.is_timeout() {
                NetFailure::Timeout(message)
            } else {
                NetFailure::Failed(message)
            }
        };
        let response = builder.send().map_err(failed)?;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cap = policy.max_response_bytes;
        let mut body = Vec::new();
        response
            .take(cap.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timed out") {
                    NetFailure::Timeout(format!("reading the body: {e}"))
                } else {
                    NetFailure::Failed(format!("reading the body: {e}"))
                }
            })?;
        if body.len() as u64 > cap {
            return Err(NetFailure::Failed(format!(
                "the response body is over the cap of {cap} bytes"
            )));
        }
        Ok(HttpResponse {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            headers,
            body,
        })
    }
}

#[cfg(feature = "net")]
pub(crate) use client::exchange;

/// Without the `net` feature no request leaves: the guest is told why.
#[cfg(not(feature = "net"))]
pub(crate) fn exchange(
    _policy: &NetPolicy,
    _request: HttpRequest,
    _timeout: Duration,
) -> Result<HttpResponse, NetFailure> {
    Err(NetFailure::Refused(
        "this dvm was built without the `net` feature: it makes no requests".into(),
    ))
}

/// Sends `request` (or answers it from the policy's replay), recording it when the
/// policy records.
fn exchange_or_replay(
    policy: &NetPolicy,
    request: HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, NetFailure> {
    use base64::Engine as _;
    let body_hash = blake3::hash(&request.body).to_hex().to_string();
    let (method, url) = (request.method.clone(), request.url.clone());
    let answer = match &policy.replay {
        Some(replay) => {
            let mut left = replay
                .left
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let found = left.iter().position(|exchange| {
                exchange.method == method
                    && exchange.url == url
                    && exchange.request_body == body_hash
            });
            match found.map(|at| left.remove(at)) {
                None => Err(NetFailure::Refused(format!(
                    "{method} {url} is not in the recorded exchanges this run replays"
                ))),
                Some(exchange) => base64::engine::general_purpose::STANDARD
                    .decode(exchange.body.as_bytes())
                    .map(|body| HttpResponse {
                        status: exchange.status,
                        reason: exchange.reason,
                        headers: exchange.headers,
                        body,
                    })
                    .map_err(|_| NetFailure::Failed("a recorded body is not base64".to_string())),
            }
        }
        None => exchange(policy, request, timeout),
    };
    if let (Some(recorder), Ok(response)) = (&policy.recorder, &answer) {
        recorder.push(NetExchange {
            method,
            url,
            request_body: body_hash,
            status: response.status,
            reason: response.reason.clone(),
            headers: response.headers.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&response.body),
        })?;
    }
    answer
}

/// How a request the door waited on ended.
pub(crate) enum Sent {
    Answer(Result<HttpResponse, NetFailure>),
    Deadline,
    Cancelled,
}

/// Sends `request` on a thread of its own and waits for it: at most its timeout, never
/// past `deadline`, and not after `cancel`.
pub(crate) fn send(
    policy: &Arc<NetPolicy>,
    request: HttpRequest,
    deadline: std::time::Instant,
    cancel: &super::CancelHandle,
) -> Sent {
    let own = request
        .timeout
        .map_or(policy.timeout, |t| t.min(policy.timeout));
    let now = std::time::Instant::now();
    let until = now
        .checked_add(own)
        .map_or(deadline, |end| end.min(deadline));
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let worker = policy.clone();
    let budget = until.saturating_duration_since(now);
    let started = std::thread::Builder::new()
        .name("dvm-net".into())
        .spawn(move || {
            let _ = answer.send(exchange_or_replay(&worker, request, budget));
        });
    if let Err(e) = started {
        return Sent::Answer(Err(NetFailure::Failed(format!(
            "the host could not start the request: {e}"
        ))));
    }
    loop {
        let now = std::time::Instant::now();
        if now >= until {
            return if until < deadline {
                Sent::Answer(Err(NetFailure::Timeout(format!(
                    "no answer within {} ms",
                    own.as_millis()
                ))))
            } else {
                Sent::Deadline
            };
        }
        if cancel.is_cancelled() {
            return Sent::Cancelled;
        }
        match answered.recv_timeout((until - now).min(Duration::from_millis(10))) {
            Ok(Err(NetFailure::Timeout(_))) if until >= deadline => return Sent::Deadline,
            Ok(answer) => return Sent::Answer(answer),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Sent::Answer(Err(NetFailure::Failed(
                    "the request ended without an answer".into(),
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_into_hosts_wildcards_and_addresses() {
        for (entry, shown) in [
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com:8080"),
            ("*.example.com", "*.example.com"),
            ("127.0.0.1:9", "127.0.0.1:9"),
            ("[::1]:80", "[::1]:80"),
            ("[::1]", "[::1]"),
        ] {
            let parsed: AllowedHost = entry.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
        }
        for bad in [
            "",
            "*",
            "*.com",
            "a*.example.com",
            "exa mple.com",
            "example.com:0",
            "example.com:99999",
            "example.com:",
            "::1",
            "[::1",
            "[::1]x",
            "http://example.com",
            "ex_ample.com",
            "-a.com",
            "a/b",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_ports_and_addresses_are_matched_as_written() {
        let policy =
            NetPolicy::parse(["api.example.com:443", "*.data.org", "127.0.0.1:8080"]).unwrap();
        let name = |n: &str| UrlHost::Name(n.into());
        assert!(policy.check_host(&name("api.example.com"), 443).is_ok());
        assert!(policy.check_host(&name("api.example.com"), 80).is_err());
        assert!(policy.check_host(&name("example.com"), 443).is_err());
        assert!(policy.check_host(&name("x.data.org"), 1).is_ok());
        assert!(policy.check_host(&name("a.b.data.org"), 1).is_ok());
        assert!(policy.check_host(&name("data.org"), 1).is_err());
        assert!(policy.check_host(&name("evildata.org"), 1).is_err());
        let local = UrlHost::Address("127.0.0.1".parse().unwrap());
        assert!(policy.check_host(&local, 8080).is_ok());
        assert!(policy.check_host(&local, 8081).is_err());
        assert!(policy.check_host(&name("localhost"), 8080).is_err());
    }

    #[test]
    fn internal_addresses_are_refused_unless_named_literally() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "::ffff:0:7f00:1",
            "2001:0:4136:e378::1",
            "192.88.99.1",
            "2002:7f00:1::",
            "192.0.0.8",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        // 192.0.0.0/24 is special-purpose, the rest of 192.0.0.0/16 is not.
        for public in ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "192.0.78.9"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
        let table: Resolver = Arc::new(|name: &str| {
            Ok(match name {
                "inside.test" => vec!["10.0.0.7".parse().unwrap()],
                "mixed.test" => vec!["127.0.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
                _ => vec!["::ffff:127.0.0.1".parse().unwrap()],
            })
        });
        let policy = NetPolicy::parse(["inside.test", "mixed.test", "mapped.test"])
            .unwrap()
            .with_resolver(table.clone());
        let err = policy.resolve("inside.test").unwrap_err();
        assert!(
            err.contains("10.0.0.7") && err.contains("internal"),
            "{err}"
        );
        assert_eq!(
            policy.resolve("mixed.test").unwrap(),
            ["1.1.1.1".parse::<IpAddr>().unwrap()]
        );
        assert!(policy.resolve("mapped.test").is_err());
        // An entry of the address does not open it to names that resolve to it.
        let named = NetPolicy::parse(["inside.test", "10.0.0.7"])
            .unwrap()
            .with_resolver(table);
        assert!(named.resolve("inside.test").is_err());
    }

    #[test]
    fn a_recording_stops_growing_at_what_a_replay_reads() {
        let recorder = NetRecorder {
            cap: 4096,
            ..NetRecorder::default()
        };
        let exchange = |body: usize| NetExchange {
            method: "GET".into(),
            url: "http://127.0.0.1/".into(),
            request_body: String::new(),
            status: 200,
            reason: "OK".into(),
            headers: vec![("x".into(), "y".into())],
            body: "A".repeat(body),
        };
        assert!(recorder.push(exchange(1000)).is_ok());
        assert!(recorder.push(exchange(1000)).is_ok());
        let Err(NetFailure::Failed(refused)) = recorder.push(exchange(3000)) else {
            panic!("an exchange past the cap is refused");
        };
        assert!(refused.contains("4096 bytes"), "{refused}");
        assert!(
            recorder.push(exchange(1000)).is_ok(),
            "smaller ones still fit"
        );
        assert_eq!(recorder.recording().exchanges.len(), 3);
    }

    #[test]
    fn extreme_policy_values_neither_panic_nor_wrap() {
        let mut policy = NetPolicy::parse(["127.0.0.1"])
            .unwrap()
            .replaying(NetRecording::default());
        policy.timeout = Duration::MAX;
        policy.max_response_bytes = u64::MAX;
        let request = HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1/".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Some(Duration::MAX),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        match send(
            &Arc::new(policy),
            request,
            deadline,
            &super::super::CancelHandle::new(),
        ) {
            Sent::Answer(Err(NetFailure::Refused(why))) => {
                assert!(why.contains("not in the recorded exchanges"), "{why}")
            }
            _ => panic!("an unrecorded request is refused"),
        }
    }

    #[test]
    fn a_request_may_allow_only_what_the_operator_allowed() {
        let within = |inner: &str, outer: &str| {
            inner
                .parse::<AllowedHost>()
                .unwrap()
                .within(&outer.parse().unwrap())
        };
        assert!(within("a.example.com", "*.example.com"));
        assert!(within("a.example.com:443", "*.example.com"));
        assert!(within("a.example.com:443", "a.example.com:443"));
        assert!(!within("a.example.com", "a.example.com:443"));
        assert!(within("*.a.example.com", "*.example.com"));
        assert!(!within("*.example.com", "a.example.com"));
        assert!(!within("example.com", "*.example.com"));
        assert!(within("127.0.0.1:80", "127.0.0.1"));
        assert!(!within("127.0.0.1", "127.0.0.1:80"));
        assert!(!within("10.0.0.1", "*.example.com"));
    }
}
