//! Who may talk to `dvm serve`: the `Host` allow-list (the DNS-rebinding check) and the
//! `Origin` check (cross-site requests from browsers), applied to every route.
//!
//! A browser page on any site can send requests to a loopback server: through DNS
//! rebinding (its own name resolving to 127.0.0.1, so `Host` names the attacker's site) or
//! directly as a cross-origin "simple" request (then `Origin` names the page's site). A
//! request is answered only when its `Host` (and an absolute URI's authority) names this
//! server — a loopback name or the bound address with the bound port, or an `--allow-host`
//! entry — and when it carries no `Origin` or an allowed one. Requests without `Host` and
//! `Origin` do not come from a browser and pass (the token, if any, still applies).
//!
//! Every header is parsed into an [`Authority`] or [`Origin`] before it is compared; a
//! header that does not parse is refused.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, StatusCode, Uri, header};

use super::ApiError;
use crate::error::Error;

/// A host (lowercase; an IPv6 address without brackets) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; refuses user info, paths,
    /// whitespace and empty hosts.
    pub fn parse(text: &str) -> Option<Authority> {
        if text.is_empty() || text.contains(['@', '/', '?', '#', '\\']) {
            return None;
        }
        if text.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return None;
        }
        let authority = axum::http::uri::Authority::try_from(text).ok()?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        // A port written but empty (`localhost:`) is malformed.
        if text.ends_with(':') {
            return None;
        }
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }

    /// The port, or the one `scheme` implies.
    fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

/// A browser origin as sent in `Origin`: `null`, or scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Null,
    Tuple {
        scheme: String,
        host: String,
        /// Explicit, or the scheme's default (`http` 80, `https` 443).
        port: Option<u16>,
    },
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// Parses the serialized form `scheme://host[:port]` (a trailing `/` is tolerated), or
    /// `null`.
    pub fn parse(text: &str) -> Option<Origin> {
        if text.eq_ignore_ascii_case("null") {
            return Some(Origin::Null);
        }
        let (scheme, rest) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let authority = Authority::parse(rest)?;
        let scheme = scheme.to_ascii_lowercase();
        let port = authority.port.or_else(|| default_port(&scheme));
        Some(Origin::Tuple {
            scheme,
            host: authority.host,
            port,
        })
    }
}

/// An `--allow-origin` entry: an origin, or `scheme://host:*` for any port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedOrigin {
    Exact(Origin),
    AnyPort { scheme: String, host: String },
}

impl AllowedOrigin {
    fn parse(text: &str) -> Option<AllowedOrigin> {
        let text = text.trim();
        if let Some(base) = text.strip_suffix(":*") {
            // `http://host:1:*` names a port twice.
            let (_, authority) = base.split_once("://")?;
            if Authority::parse(authority)?.port.is_some() {
                return None;
            }
            return match Origin::parse(base)? {
                Origin::Tuple { scheme, host, .. } => Some(AllowedOrigin::AnyPort { scheme, host }),
                Origin::Null => None,
            };
        }
        Origin::parse(text).map(AllowedOrigin::Exact)
    }

    fn allows(&self, origin: &Origin) -> bool {
        match (self, origin) {
            (AllowedOrigin::Exact(allowed), origin) => allowed == origin,
            (
                AllowedOrigin::AnyPort { scheme, host },
                Origin::Tuple {
                    scheme: s, host: h, ..
                },
            ) => scheme == s && host == h,
            (AllowedOrigin::AnyPort { .. }, Origin::Null) => false,
        }
    }
}

/// The checks as configured: the bound address, `--allow-host` and `--allow-origin`.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    bound: SocketAddr,
    hosts: Vec<Authority>,
    origins: Vec<AllowedOrigin>,
}

/// Host names that are always this machine.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl AccessPolicy {
    /// The policy for a server bound at `bound`; an entry that does not parse is an error
    /// naming it.
    pub fn new(
        bound: SocketAddr,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Result<AccessPolicy, Error> {
        let hosts = allowed_hosts
            .iter()
            .map(|text| {
                Authority::parse(text.trim()).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "--allow-host `{text}` is not a host name or address with an optional \
                         port, e.g. dvm.internal or dvm.internal:8080"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let origins = allowed_origins
            .iter()
            .map(|text| {
                AllowedOrigin::parse(text).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "--allow-origin `{text}` is not an origin; write scheme://host[:port], \
                         e.g. http://localhost:3000, or http://localhost:* for any port"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AccessPolicy {
            bound,
            hosts,
            origins,
        })
    }

    /// Loopback names on the bound port, no browser origins.
    pub fn loopback_only(bound: SocketAddr) -> AccessPolicy {
        AccessPolicy {
            bound,
            hosts: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// Whether `authority` names this server.
    fn host_allowed(&self, authority: &Authority) -> bool {
        let port = self.bound.port();
        let own_port = authority.port_or(80) == port;
        if own_port && LOOPBACK_NAMES.contains(&authority.host.as_str()) {
            return true;
        }
        let bound_ip = self.bound.ip();
        if own_port
            && !bound_ip.is_unspecified()
            && authority.host.parse::<IpAddr>().ok() == Some(bound_ip)
        {
            return true;
        }
        self.hosts.iter().any(|allowed| {
            allowed.host == authority.host && allowed.port.is_none_or(|p| Some(p) == authority.port)
        })
    }

    /// Checks one request's `Host`, URI authority, `Origin` and `Sec-Fetch-Site`.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        let forbidden_host = |what: &str| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "{what}; this server answers requests for localhost, 127.0.0.1 and [::1] \
                     on its own port, and the names its operator allowed with --allow-host \
                     (the DNS-rebinding check)"
                ),
            )
        };
        let mut hosts = headers.get_all(header::HOST).iter();
        if let Some(value) = hosts.next() {
            if hosts.next().is_some() {
                return Err(forbidden_host("the request has more than one Host header"));
            }
            let text = value
                .to_str()
                .map_err(|_| forbidden_host("the Host header is not text"))?;
            let authority = Authority::parse(text)
                .ok_or_else(|| forbidden_host("the Host header is malformed"))?;
            if !self.host_allowed(&authority) {
                return Err(forbidden_host(&format!("Host `{text}` is not allowed")));
            }
        }
        if let Some(authority) = uri.authority() {
            let parsed = Authority::parse(authority.as_str())
                .ok_or_else(|| forbidden_host("the request URI's authority is malformed"))?;
            if !self.host_allowed(&parsed) {
                return Err(forbidden_host(&format!(
                    "the request URI's host `{authority}` is not allowed"
                )));
            }
        }
        let forbidden_origin = |what: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "{what}; browsers may call this server only from origins its operator \
                     allowed with --allow-origin"
                ),
            )
        };
        let mut origins = headers.get_all(header::ORIGIN).iter();
        if let Some(value) = origins.next() {
            if origins.next().is_some() {
                return Err(forbidden_origin(
                    "the request has more than one Origin header".into(),
                ));
            }
            let text = value
                .to_str()
                .map_err(|_| forbidden_origin("the Origin header is not text".into()))?;
            let origin = Origin::parse(text)
                .ok_or_else(|| forbidden_origin("the Origin header is malformed".into()))?;
            if !self.origins.iter().any(|allowed| allowed.allows(&origin)) {
                return Err(forbidden_origin(format!("Origin `{text}` is not allowed")));
            }
            return Ok(());
        }
        // Without an Origin (some browsers leave it out of GETs): a browser's fetch metadata
        // still says whether another site made the request.
        let site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if matches!(site.as_deref(), Some("cross-site" | "same-site")) {
            return Err(forbidden_origin(
                "a request another site's page made (Sec-Fetch-Site) without an allowed Origin"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Whether `headers` declare a JSON body (`application/json` or `application/*+json`, any
/// parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// 415 unless the body is declared JSON. A body left empty may come without a type (a bare
/// `POST /sessions`); with one, it must be JSON too.
pub fn require_json(headers: &HeaderMap, body_empty: bool) -> Result<(), ApiError> {
    if is_json(headers) || (body_empty && !headers.contains_key(header::CONTENT_TYPE)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "this route takes a JSON body: send `Content-Type: application/json`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn policy(hosts: &[&str], origins: &[&str]) -> AccessPolicy {
        AccessPolicy::new(
            "127.0.0.1:8080".parse().unwrap(),
            &hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &origins.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn allowed(policy: &AccessPolicy, pairs: &[(&str, &str)]) -> bool {
        policy
            .check(&Uri::from_static("/x"), &headers(pairs))
            .is_ok()
    }

    #[test]
    fn hosts_must_name_this_server() {
        let p = policy(&["dvm.internal", "box:9000"], &[]);
        for good in [
            "localhost:8080",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "dvm.internal",
            "dvm.internal:1234",
            "box:9000",
        ] {
            assert!(allowed(&p, &[("host", good)]), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost:8081",
            "localhost",
            "127.0.0.2:8080",
            "localhost.:8080",
            "box:9001",
            "box",
            "user@localhost:8080",
            "localhost:8080/x",
            "",
            "localhost:",
            "[::1",
        ] {
            assert!(!allowed(&p, &[("host", bad)]), "{bad}");
        }
        assert!(!allowed(
            &p,
            &[("host", "localhost:8080"), ("host", "evil.example")]
        ));
        assert!(allowed(&p, &[]), "no Host: not a browser");
        let absolute = Uri::from_static("http://evil.example/execute");
        assert!(
            p.check(&absolute, &headers(&[("host", "localhost:8080")]))
                .is_err()
        );
    }

    #[test]
    fn origins_must_be_allowed() {
        let p = policy(
            &[],
            &[
                "http://localhost:3000",
                "https://app.example",
                "http://dev:*",
            ],
        );
        let host = ("host", "localhost:8080");
        for good in [
            "http://localhost:3000",
            "https://app.example",
            "https://app.example:443",
            "http://dev:1",
            "http://dev",
        ] {
            assert!(allowed(&p, &[host, ("origin", good)]), "{good}");
        }
        for bad in [
            "http://localhost:3001",
            "http://localhost",
            "https://app.example:8443",
            "http://app.example",
            "https://dev:1",
            "null",
            "http://evil.example",
            "localhost:3000",
            "http://user@localhost:3000",
        ] {
            assert!(!allowed(&p, &[host, ("origin", bad)]), "{bad}");
        }
        assert!(!allowed(&p, &[host, ("sec-fetch-site", "cross-site")]));
        assert!(!allowed(&p, &[host, ("sec-fetch-site", "same-site")]));
        assert!(allowed(&p, &[host, ("sec-fetch-site", "same-origin")]));
        assert!(allowed(&p, &[host, ("sec-fetch-site", "none")]));
        let none = policy(&[], &[]);
        assert!(!allowed(
            &none,
            &[host, ("origin", "http://localhost:8080")]
        ));
        assert!(AccessPolicy::new("127.0.0.1:1".parse().unwrap(), &[], &["nope".into()]).is_err());
        assert!(AccessPolicy::new("127.0.0.1:1".parse().unwrap(), &["a b".into()], &[]).is_err());
        assert!(AllowedOrigin::parse("http://x:1:*").is_none());
        assert!(AllowedOrigin::parse("null:*").is_none());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/vnd.x+json"
        )])));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/jsonx",
        ] {
            assert!(!is_json(&headers(&[("content-type", bad)])), "{bad}");
            assert!(require_json(&headers(&[("content-type", bad)]), true).is_err());
        }
        assert!(require_json(&HeaderMap::new(), true).is_ok());
        assert!(require_json(&HeaderMap::new(), false).is_err());
    }

    proptest! {
        /// No Host the policy accepts names anything but this server: whatever the text,
        /// an accepted one parses to a loopback name on the bound port.
        #[test]
        fn accepted_hosts_are_loopback_on_the_bound_port(text in "\\PC{0,40}") {
            let p = policy(&[], &[]);
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut map = HeaderMap::new();
                map.insert(header::HOST, value);
                if p.check(&Uri::from_static("/"), &map).is_ok() {
                    let authority = Authority::parse(&text).unwrap();
                    prop_assert!(LOOPBACK_NAMES.contains(&authority.host.as_str()));
                    prop_assert_eq!(authority.port_or(80), 8080);
                }
            }
        }

        #[test]
        fn generated_hosts_round_trip(
            name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            port in proptest::option::of(1u16..),
        ) {
            let text = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let authority = Authority::parse(&text).unwrap();
            prop_assert_eq!(authority.host, name);
            prop_assert_eq!(authority.port, port);
        }

        /// An origin with no allow-list entry is refused, whatever it is.
        #[test]
        fn unlisted_origins_are_refused(text in "\\PC{0,60}") {
            let p = policy(&[], &[]);
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut map = HeaderMap::new();
                map.insert(header::ORIGIN, value);
                prop_assert!(p.check(&Uri::from_static("/"), &map).is_err());
            }
        }
    }
}
