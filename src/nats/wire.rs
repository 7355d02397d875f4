//! What travels on the bus: run requests, their limits, outcomes and signed outcomes.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, HostError};
use crate::limits::Limits;
pub use crate::limits::WireLimits;
use crate::outcome::{Outcome, Status};
use crate::results::signing::SignedBy;
use crate::results::{Keys, Rejection, Trust};
use crate::sandbox::RunInput;

/// Whether `id` can be a request id: what [`crate::id::new_id`] makes, or any short
/// name of letters, digits, `-` and `_` (it becomes a bucket key and appears in logs).
pub(super) fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
    /// Serialized as [`WireLimits`], the form limits travel in.
    pub limits: Limits,
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Also install what the script imports that the runtime lacks; a PEP 723 block and a
    /// `requirements.txt`/`package.json` among the files are always read.
    #[serde(default)]
    pub auto_deps: bool,
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
            id: crate::id::new_id(),
            runtime: runtime.to_string(),
            name: name.to_string(),
            code: code.to_string(),
            stdin: String::from_utf8_lossy(&input.stdin).into_owned(),
            args: input.args.clone(),
            env: input.env.clone(),
            limits: input.limits.clone(),
            requirements: Vec::new(),
            auto_deps: false,
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
    /// That error's kind ([`Error::kind`]), so the client reports the worker's kind and exit
    /// code; absent from older workers' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The run's outcome in its own serde form, its fields beside these; `None` when the
    /// request could not run, which travels as `"status": null` and blank fields.
    #[serde(flatten, with = "body")]
    pub outcome: Option<Outcome>,
}

/// The outcome part of a [`WireOutcome`]: an [`Outcome`]'s own fields, or for a request that
/// could not run the same fields blank with a null status.
mod body {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use crate::outcome::{Outcome, Status};

    /// A JSON object's fields in the order they were written, nested objects too.
    struct Fields(Vec<(String, Field)>);

    /// One field's value: an object (kept in order) or anything else.
    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Field {
        Object(Fields),
        Other(Value),
    }

    impl Serialize for Fields {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(name, value)| (name, value)))
        }
    }

    impl<'de> Deserialize<'de> for Fields {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Fields;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Fields, A::Error> {
                    let mut fields = Vec::new();
                    while let Some(field) = map.next_entry()? {
                        fields.push(field);
                    }
                    Ok(Fields(fields))
                }
            }
            d.deserialize_map(Visit)
        }
    }

    pub(super) fn serialize<S: serde::Serializer>(
        outcome: &Option<Outcome>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match outcome {
            Some(outcome) => outcome.serialize(s),
            None => {
                // A blank outcome's fields, in the outcome's own order, with no status.
                let text = serde_json::to_string(&Outcome::blank(Status::Crashed))
                    .map_err(S::Error::custom)?;
                let Fields(fields) = serde_json::from_str(&text).map_err(S::Error::custom)?;
                s.collect_map(fields.into_iter().map(|(name, value)| {
                    let value = match name.as_str() {
                        "status" => Field::Other(Value::Null),
                        _ => value,
                    };
                    (name, value)
                }))
            }
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Outcome>, D::Error> {
        let fields = Value::deserialize(d)?;
        if fields.get("status").is_none_or(Value::is_null) {
            return Ok(None);
        }
        Outcome::deserialize(fields)
            .map(Some)
            .map_err(D::Error::custom)
    }
}

pub(super) fn decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

impl WireOutcome {
    pub(super) fn of(
        request: &str,
        worker: &str,
        delivery: u64,
        ran: Result<Outcome, Error>,
    ) -> Self {
        let mut wire = WireOutcome {
            request: request.to_string(),
            worker: worker.to_string(),
            delivery,
            error: None,
            user_error: false,
            error_kind: None,
            outcome: None,
        };
        match ran {
            Ok(outcome) => wire.outcome = Some(outcome),
            Err(e) => {
                wire.user_error = e.is_user_error();
                wire.error_kind = Some(e.kind().to_string());
                wire.error = Some(e.to_string());
            }
        }
        wire
    }

    /// The outcome, or the error the worker met, with the worker's kind when it sent one
    /// this build knows.
    pub fn into_outcome(self) -> Result<Outcome, Error> {
        if let Some(message) = self.error {
            let kind = self.error_kind.as_deref().and_then(Error::known_kind);
            return Err(match (kind, self.user_error) {
                (Some("invalid_input"), _) | (None, true) => Error::InvalidInput(message),
                (kind, user_error) => Error::Remote {
                    kind,
                    user_error,
                    message,
                },
            });
        }
        // Neither an error nor a status: the run ended without saying how.
        Ok(self
            .outcome
            .unwrap_or_else(|| Outcome::blank(Status::Crashed)))
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
        let payload = serde_json::to_string(outcome).map_err(|source| HostError::Encode {
            what: "an outcome",
            source,
        })?;
        let signed = SignedBy::new(
            &keys.signer,
            OUTCOME_DOMAIN,
            &[outcome.request.as_bytes(), payload.as_bytes()],
        );
        serde_json::to_vec(&SignedOutcome { signed, payload }).map_err(|source| {
            HostError::Encode {
                what: "an outcome",
                source,
            }
            .into()
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitKind;
    use crate::limits::OutputOverflow;
    use crate::outcome::Truncated;
    use std::time::Duration;

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
        assert!(valid_request_id(&crate::id::new_id()));
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
            display: vec![
                crate::Display::parse(
                    serde_json::json!({"text/plain": "x", "image/png": "iVBORw0K"})
                        .as_object()
                        .unwrap()
                        .clone(),
                )
                .unwrap(),
            ],
            tool_calls: vec![crate::ToolCall {
                name: "search".into(),
                request_bytes: 40,
                response_bytes: 12,
                duration: std::time::Duration::from_micros(1500),
                error: None,
            }],
            net: vec![crate::NetRequest {
                method: "GET".into(),
                url: "http://127.0.0.1:9/x".into(),
                status: None,
                bytes: 0,
                duration: std::time::Duration::from_micros(300),
                error: Some("refused".into()),
            }],
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
        assert_eq!(back.tool_calls, outcome.tool_calls);
        assert_eq!(back.net, outcome.net);
        let failed = WireOutcome::of("r", "w", 1, Err(Error::InvalidInput("no".into())));
        assert!(matches!(failed.into_outcome(), Err(Error::InvalidInput(_))));
        let broken = WireOutcome::of("r", "w", 1, Err(Error::Internal("disk".into())));
        assert!(matches!(
            broken.into_outcome(),
            Err(Error::Remote {
                kind: Some("internal"),
                user_error: false,
                ..
            })
        ));
    }

    #[test]
    fn an_error_kind_survives_the_wire() {
        let refused = Error::UnknownRuntime {
            id: "cobol".into(),
            known: "python, javascript".into(),
        };
        let message = refused.to_string();
        let wire = WireOutcome::of("r", "w", 1, Err(refused));
        let json = serde_json::to_string(&wire).unwrap();
        assert!(json.contains(r#""error_kind":"unknown_runtime""#), "{json}");
        let back: WireOutcome = serde_json::from_str(&json).unwrap();
        let error = back.into_outcome().unwrap_err();
        assert_eq!(error.kind(), "unknown_runtime");
        assert!(error.is_user_error(), "exit code 2, as on the worker");
        assert_eq!(error.http_status(), 422);
        assert_eq!(error.to_string(), message);
    }

    #[test]
    fn an_outcome_from_an_older_worker_still_parses() {
        let wire = WireOutcome::of("r", "w", 1, Err(Error::Nats("gone".into())));
        let mut json = serde_json::to_value(&wire).unwrap();
        json.as_object_mut().unwrap().remove("error_kind");
        let old: WireOutcome = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old.error_kind, None);
        let error = old.into_outcome().unwrap_err();
        assert_eq!(error.kind(), "remote");
        assert!(!error.is_user_error());
        json["user_error"] = serde_json::Value::Bool(true);
        let old: WireOutcome = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old.into_outcome().unwrap_err().kind(), "invalid_input");
        json["error_kind"] = serde_json::Value::String("a_kind_from_the_future".into());
        let newer: WireOutcome = serde_json::from_value(json).unwrap();
        let error = newer.into_outcome().unwrap_err();
        assert_eq!(error.kind(), "invalid_input", "an unknown kind falls back");
        assert!(error.is_user_error());
    }

    /// Today's bytes of a request, as a caller of an earlier build publishes them.
    const REQUEST_JSON: &str = r#"{"id":"r1","runtime":"python","name":"main.py","code":"print(1)","stdin":"in","args":["a"],"env":[["K","V"]],"limits":{"deadline_ms":1500,"fuel":null,"memory_bytes":1048576,"stdout_bytes":10,"stderr_bytes":20,"stop_on_overflow":true,"table_elements":100,"disk_bytes":4096,"files":7,"open_files":9},"requirements":["six"],"auto_deps":true,"files":{"a.txt":"aGk="},"seed":42}"#;

    /// Today's bytes of a finished run's outcome and of a failed request's.
    const OUTCOME_JSON: &str = r#"{"request":"r","worker":"w","delivery":2,"error":null,"user_error":false,"status":"limit","exit_code":null,"stdout":"aGk=","stderr":"","stdout_bytes":2,"stderr_bytes":0,"truncated":{"stdout":true,"stderr":false},"limit":"fuel","fuel_used":5,"duration_ms":1.5,"memory_peak_bytes":65536,"trap":"all fuel consumed","files":[],"cache":"miss","cache_key":null}"#;
    const FAILED_JSON: &str = r#"{"request":"r","worker":"w","delivery":1,"error":"no such runtime","user_error":true,"error_kind":"unknown_runtime","status":null,"exit_code":null,"stdout":"","stderr":"","stdout_bytes":0,"stderr_bytes":0,"truncated":{"stdout":false,"stderr":false},"limit":null,"fuel_used":0,"duration_ms":0.0,"memory_peak_bytes":0,"trap":null,"files":[],"cache":"off","cache_key":null}"#;

    #[test]
    fn todays_request_bytes_decode_and_encode_unchanged() {
        let request: RunRequest = serde_json::from_str(REQUEST_JSON).unwrap();
        assert_eq!(serde_json::to_string(&request).unwrap(), REQUEST_JSON);
        let limits = request.limits.clone();
        assert_eq!(limits.deadline, Duration::from_millis(1500));
        assert_eq!(limits.output_overflow, OutputOverflow::Stop);
        assert_eq!((limits.fuel, limits.files, limits.open_files), (None, 7, 9));
        assert_eq!(
            serde_json::to_value(WireLimits::from(&limits)).unwrap(),
            serde_json::to_value(&request.limits).unwrap()
        );
    }

    #[test]
    fn todays_outcome_bytes_decode_and_encode_unchanged() {
        let wire: WireOutcome = serde_json::from_str(OUTCOME_JSON).unwrap();
        assert_eq!(serde_json::to_string(&wire).unwrap(), OUTCOME_JSON);
        let outcome = wire.clone().into_outcome().unwrap();
        assert_eq!(outcome.status, Status::Limit);
        assert_eq!(outcome.limit, Some(LimitKind::Fuel));
        assert_eq!(outcome.stdout, b"hi");
        assert_eq!(outcome.duration, Duration::from_micros(1500));
        let again = WireOutcome::of("r", "w", 2, Ok(outcome));
        assert_eq!(serde_json::to_string(&again).unwrap(), OUTCOME_JSON);

        let failed: WireOutcome = serde_json::from_str(FAILED_JSON).unwrap();
        assert_eq!(serde_json::to_string(&failed).unwrap(), FAILED_JSON);
        let error = failed.into_outcome().unwrap_err();
        assert_eq!(error.kind(), "unknown_runtime");
        assert!(error.is_user_error());
    }

    #[test]
    fn odd_outcomes_read_without_a_panic() {
        // Neither an error nor a status: the run ended without saying how.
        let silent = FAILED_JSON.replace(r#""error":"no such runtime""#, r#""error":null"#);
        let wire: WireOutcome = serde_json::from_str(&silent).unwrap();
        assert_eq!(wire.into_outcome().unwrap().status, Status::Crashed);
        // A status this build does not know is refused, not guessed.
        let unknown = OUTCOME_JSON.replace(r#""status":"limit""#, r#""status":"melted""#);
        assert!(serde_json::from_str::<WireOutcome>(&unknown).is_err());
        // Output that is not base64 reads as none, as it always did on the bus.
        let garbled = OUTCOME_JSON.replace("aGk=", "not base64!");
        let wire: WireOutcome = serde_json::from_str(&garbled).unwrap();
        assert!(wire.into_outcome().unwrap().stdout.is_empty());
    }
}
