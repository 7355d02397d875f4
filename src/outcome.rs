//! How a run ended, as typed data.

use std::time::Duration;

use crate::limits::LimitKind;

/// How a run ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    /// The guest exited with code 0.
    Ok,
    /// The guest exited with a non-zero code.
    Error,
    /// A limit stopped the guest; [`Outcome::limit`] says which.
    Limit,
    /// The guest trapped for any other reason (unreachable, stack overflow, out-of-bounds
    /// access…); [`Outcome::trap`] has the message.
    Crashed,
}

impl Status {
    /// The status's name, as in JSON (`"ok"`, `"error"`, `"limit"`, `"crashed"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether each output stream was cut at its cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truncated {
    pub stdout: bool,
    pub stderr: bool,
    /// Display items were dropped: they did not fit in the stdout cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub display: bool,
}

/// One display item, as Jupyter's MIME bundles are: the same value in several forms, keyed
/// by MIME type (`text/plain`, `text/html`, `image/png` in base64, `application/json` as
/// JSON…). A matplotlib figure shown or left open, `display(obj)`, or a session's final
/// expression with rich forms (`_repr_html_`, `_repr_png_`…) each make one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "DisplayData")]
pub struct Display {
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A display item's wire form, checked by [`Display::parse`] before it becomes one.
#[derive(serde::Deserialize)]
struct DisplayData {
    data: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<DisplayData> for Display {
    type Error = String;

    fn try_from(wire: DisplayData) -> Result<Self, String> {
        Display::parse(wire.data)
    }
}

/// MIME types a display item can carry, with the file extension `dvm run --display` gives
/// each; forms with other types are dropped.
pub const DISPLAY_TYPES: [(&str, &str); 9] = [
    ("text/plain", "txt"),
    ("text/html", "html"),
    ("text/markdown", "md"),
    ("text/latex", "tex"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("application/json", "json"),
];

impl Display {
    /// A display item from forms a guest (or a cache entry) sent: forms of unknown types are
    /// dropped, binary images must be base64, text forms must be text, and at least one
    /// form must remain.
    pub fn parse(forms: serde_json::Map<String, serde_json::Value>) -> Result<Display, String> {
        use base64::Engine as _;
        let mut data = serde_json::Map::new();
        for (mime, value) in forms {
            if !DISPLAY_TYPES.iter().any(|(known, _)| *known == mime) {
                continue;
            }
            let valid = match (mime.as_str(), &value) {
                ("application/json", _) => true,
                ("image/png" | "image/jpeg" | "image/gif", serde_json::Value::String(text)) => {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .is_ok()
                }
                (_, serde_json::Value::String(_)) => true,
                _ => false,
            };
            if !valid {
                return Err(format!("the display form {mime} is not valid"));
            }
            data.insert(mime, value);
        }
        if data.is_empty() {
            return Err("a display item has no form of a known type".into());
        }
        Ok(Display { data })
    }

    /// The bytes of the form `mime` as a file holds them (images decoded from base64).
    pub fn bytes(&self, mime: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match (mime, self.data.get(mime)?) {
            ("image/png" | "image/jpeg" | "image/gif", serde_json::Value::String(text)) => {
                base64::engine::general_purpose::STANDARD.decode(text).ok()
            }
            (_, serde_json::Value::String(text)) => Some(text.clone().into_bytes()),
            (_, value) => serde_json::to_vec_pretty(value).ok(),
        }
    }
}

/// The result of one run.
///
/// Its serde form is the one JSON model of an outcome: output bytes in base64 and the
/// duration as `duration_ms` (fractional milliseconds). The bus's [`crate::nats::WireOutcome`]
/// carries exactly this form, and [`Outcome::to_json`] (the CLI's and the server's view) is
/// it with the output shown as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// The exit code for `ok` and `error`; `None` when a limit or a trap ended the run.
    pub exit_code: Option<i32>,
    /// The kept stdout bytes (at most the cap).
    #[serde(with = "base64_bytes")]
    pub stdout: Vec<u8>,
    /// The kept stderr bytes (at most the cap).
    #[serde(with = "base64_bytes")]
    pub stderr: Vec<u8>,
    /// Every byte the guest wrote to stdout, kept or not.
    pub stdout_bytes: u64,
    /// Every byte the guest wrote to stderr, kept or not.
    pub stderr_bytes: u64,
    pub truncated: Truncated,
    /// Which limit stopped the run; `Some` exactly when `status` is `Limit`.
    pub limit: Option<LimitKind>,
    /// Fuel consumed by the guest (instantiation is not charged).
    pub fuel_used: u64,
    /// Wall-clock time of the run, instantiation included.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Largest linear memory the guest was granted, in bytes.
    pub memory_peak_bytes: u64,
    /// The trap message when the guest crashed or was stopped by a trap.
    pub trap: Option<String>,
    /// Regular files in the workspace the run created or changed, in path order.
    pub files: Vec<crate::workspace::OutputFile>,
    /// What the result cache did for this run.
    pub cache: CacheStatus,
    /// The run's result-cache key, when it was eligible.
    pub cache_key: Option<String>,
    /// What the run displayed (figures, rich values), in order; counted against the stdout
    /// cap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub display: Vec<Display>,
    /// The host tools the guest called, in order (see [`crate::HostTools`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The HTTP requests the guest made through the host, in order (see
    /// [`crate::NetPolicy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetRequest>,
}

/// One HTTP request the guest made through the host, as the outcome records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetRequest {
    pub method: String,
    /// The URL as the guest asked for it (at most 2,048 characters kept).
    pub url: String,
    /// The response's status; `None` when there was no response.
    pub status: Option<u16>,
    /// Bytes of the response body handed to the guest.
    pub bytes: u64,
    /// Wall-clock time of the request (`ms` in JSON, fractional milliseconds).
    #[serde(rename = "ms", with = "millis")]
    pub duration: Duration,
    /// Why the request was refused or failed; `None` when a response came back.
    #[serde(default)]
    pub error: Option<String>,
}

/// One call of a host tool, as the outcome records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The tool's name, as the guest asked for it.
    pub name: String,
    /// Bytes of the guest's request.
    pub request_bytes: u64,
    /// Bytes of the answer handed back to the guest (0 when there was none).
    pub response_bytes: u64,
    /// Wall-clock time of the call (`ms` in JSON, fractional milliseconds).
    #[serde(rename = "ms", with = "millis")]
    pub duration: Duration,
    /// Why the call failed (unknown tool, bad arguments, the tool's own error, a timeout, an
    /// answer over the cap); `None` when it succeeded.
    #[serde(default)]
    pub error: Option<String>,
}

impl Outcome {
    /// The JSON shape of an outcome: the fields of the CLI's `--json` contract. It is the
    /// outcome's serde form with stdout and stderr as (lossy) text instead of base64.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields.insert(
                "stdout".into(),
                String::from_utf8_lossy(&self.stdout).into(),
            );
            fields.insert(
                "stderr".into(),
                String::from_utf8_lossy(&self.stderr).into(),
            );
        }
        value
    }

    /// An outcome with nothing in it: what a request that could not run carries beside
    /// its error.
    #[cfg(feature = "nats")]
    pub(crate) fn blank(status: Status) -> Outcome {
        Outcome {
            status,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: Truncated::default(),
            limit: None,
            fuel_used: 0,
            duration: Duration::ZERO,
            memory_peak_bytes: 0,
            trap: None,
            files: Vec::new(),
            cache: CacheStatus::Off,
            cache_key: None,
            display: Vec::new(),
            tool_calls: Vec::new(),
            net: Vec::new(),
        }
    }
}

/// Bytes as standard base64 text. Decoding is lenient as the bus always was: text that is
/// not base64 reads as no bytes.
pub(crate) mod base64_bytes {
    use base64::Engine as _;

    pub(crate) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Ok(base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .unwrap_or_default())
    }

    /// The same base64 form, read strictly: text that is not base64 is refused (the result
    /// cache's stored entries).
    pub(crate) mod strict {
        use base64::Engine as _;

        pub(crate) use super::serialize;

        pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<u8>, D::Error> {
            let text = <String as serde::Deserialize>::deserialize(d)?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| serde::de::Error::custom(format!("output is not base64 ({e})")))
        }
    }
}

/// A duration as fractional milliseconds; a negative or out-of-range number reads as zero.
pub(crate) mod millis {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let ms = <f64 as serde::Deserialize>::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default())
    }
}

/// Whether a run uses the result cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Look up and store deterministic runs without grants (the default).
    #[default]
    Auto,
    /// Neither look up nor store.
    Off,
}

/// What the cache did for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// The run was not eligible, or caching was off.
    #[default]
    Off,
    /// The outcome came from the cache.
    Hit,
    /// The run ran (and was stored if its ending allows).
    Miss,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_items_keep_known_forms_and_refuse_malformed_ones() {
        let forms = |value: serde_json::Value| value.as_object().unwrap().clone();
        let item = Display::parse(forms(serde_json::json!({
            "text/plain": "x", "x-evil/type": "dropped", "application/json": {"a": 1}
        })))
        .unwrap();
        assert_eq!(item.data.len(), 2);
        assert!(!item.data.contains_key("x-evil/type"));
        assert_eq!(item.bytes("text/plain").unwrap(), b"x");
        assert!(Display::parse(forms(serde_json::json!({"image/png": "%%"}))).is_err());
        assert!(Display::parse(forms(serde_json::json!({"text/html": 5}))).is_err());
        assert!(Display::parse(forms(serde_json::json!({"y/z": "a"}))).is_err());
        // A stored or wired item is checked the same way when it is read back.
        let bad: Result<Display, _> = serde_json::from_str(r#"{"data":{"image/png":"!!"}}"#);
        assert!(bad.is_err());
        let png = Display::parse(forms(serde_json::json!({"image/png": "iVBORw0K"}))).unwrap();
        assert_eq!(png.bytes("image/png").unwrap(), b"\x89PNG\r\n");
    }

    fn sample() -> Outcome {
        Outcome {
            status: Status::Limit,
            exit_code: None,
            stdout: vec![b'h', b'i', 0xff],
            stderr: b"err".to_vec(),
            stdout_bytes: 9,
            stderr_bytes: 3,
            truncated: Truncated {
                stdout: true,
                stderr: false,
                display: false,
            },
            limit: Some(LimitKind::Fuel),
            fuel_used: 5,
            duration: Duration::from_micros(1500),
            memory_peak_bytes: 65536,
            trap: Some("all fuel consumed".into()),
            files: vec![crate::workspace::OutputFile {
                path: "out.txt".into(),
                size: 2,
                blake3: None,
            }],
            cache: CacheStatus::Miss,
            cache_key: Some("k".into()),
            display: Vec::new(),
            tool_calls: Vec::new(),
            net: Vec::new(),
        }
    }

    #[test]
    fn the_serde_form_is_lossless_and_the_json_view_keeps_the_cli_contract() {
        let outcome = sample();
        let text = serde_json::to_string(&outcome).unwrap();
        assert!(text.contains(r#""stdout":"aGn/""#), "{text}");
        assert!(text.contains(r#""duration_ms":1.5"#), "{text}");
        let back: Outcome = serde_json::from_str(&text).unwrap();
        assert_eq!(back, outcome);

        let expected = serde_json::json!({
            "status": "limit",
            "exit_code": null,
            "stdout": "hi\u{fffd}",
            "stderr": "err",
            "stdout_bytes": 9,
            "stderr_bytes": 3,
            "truncated": {"stdout": true, "stderr": false},
            "limit": "fuel",
            "fuel_used": 5,
            "duration_ms": 1.5,
            "memory_peak_bytes": 65536,
            "trap": "all fuel consumed",
            "files": [{"path": "out.txt", "size": 2, "blake3": null}],
            "cache": "miss",
            "cache_key": "k",
        });
        assert_eq!(outcome.to_json(), expected);
    }

    #[test]
    fn bad_numbers_and_base64_read_leniently_but_not_as_a_panic() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["stdout"] = "not base64!".into();
        value["duration_ms"] = (-1.0).into();
        let read: Outcome = serde_json::from_value(value.clone()).unwrap();
        assert!(read.stdout.is_empty());
        assert_eq!(read.duration, Duration::ZERO);
        value["status"] = "exploded".into();
        assert!(serde_json::from_value::<Outcome>(value).is_err());
    }
}
