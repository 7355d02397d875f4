//! An OpenAI-compatible chat-completions client (OpenAI, Ollama, llama.cpp server, vLLM…)
//! as an agent [`Provider`](crate::agent::Provider).
//!
//! Configuration follows the ecosystem's convention: `OPENAI_BASE_URL` (default the OpenAI
//! API) and `OPENAI_API_KEY` from the environment, overridden by explicit settings. Each
//! request has a timeout; 429 and 5xx answers and connection failures are retried with
//! exponential backoff (honouring `Retry-After`), up to a bounded number of tries.

use std::time::Duration;

use serde::Deserialize;

use crate::agent::{Message, Provider};
use crate::error::Error;

/// The API used when neither `--base-url` nor `OPENAI_BASE_URL` names one.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// How to reach a chat-completions endpoint.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Up to and including the version segment, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// Per request.
    pub timeout: Duration,
    /// Tries per reply (the first included).
    pub tries: u32,
    /// The first backoff; each retry doubles it.
    pub backoff: Duration,
}

impl LlmConfig {
    /// From the environment, with `base_url` and `api_key` overriding it when given.
    pub fn from_env(model: &str, base_url: Option<&str>, api_key: Option<&str>) -> LlmConfig {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        LlmConfig {
            base_url: base_url
                .map(str::to_string)
                .or_else(|| env("OPENAI_BASE_URL"))
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            api_key: api_key
                .map(str::to_string)
                .or_else(|| env("OPENAI_API_KEY")),
            model: model.to_string(),
            timeout: Duration::from_secs(120),
            tries: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The chat-completions provider.
pub struct ChatProvider {
    config: LlmConfig,
    client: reqwest::blocking::Client,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

fn llm_error(message: impl std::fmt::Display) -> Error {
    Error::Llm(message.to_string())
}

impl ChatProvider {
    pub fn new(config: LlmConfig) -> Result<ChatProvider, Error> {
        // reqwest takes its TLS from rustls, with ring as the crypto provider; another part
        // of the process may have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| llm_error(format!("cannot make an HTTP client: {e}")))?;
        Ok(ChatProvider { config, client })
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        )
    }

    /// One request; `Ok(Err(wait))` for an answer worth retrying after `wait`.
    fn try_once(&self, body: &serde_json::Value) -> Result<Result<String, Duration>, Error> {
        let mut request = self.client.post(self.endpoint()).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(e) if e.is_timeout() || e.is_connect() => {
                tracing::warn!("chat completion: {e}; retrying");
                return Ok(Err(Duration::ZERO));
            }
            Err(e) => {
                return Err(llm_error(format!(
                    "request to {} failed: {e}",
                    self.endpoint()
                )));
            }
        };
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map_or(Duration::ZERO, |secs| Duration::from_secs(secs.min(60)));
            tracing::warn!("chat completion: {status}; retrying");
            return Ok(Err(wait));
        }
        let text = response
            .text()
            .map_err(|e| llm_error(format!("reading the answer failed: {e}")))?;
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            return Err(llm_error(format!(
                "{} answered {status}: {excerpt}",
                self.endpoint()
            )));
        }
        let completion: Completion = serde_json::from_str(&text)
            .map_err(|e| llm_error(format!("the answer is not a chat completion ({e})")))?;
        completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .map(Ok)
            .ok_or_else(|| llm_error("the answer has no message content"))
    }
}

impl Provider for ChatProvider {
    fn describe(&self) -> String {
        format!("{} at {}", self.config.model, self.config.base_url)
    }

    fn reply(&mut self, conversation: &[Message]) -> Result<String, Error> {
        let body = serde_json::json!({
            "model": self.config.model,
            "messages": conversation,
        });
        let mut backoff = self.config.backoff;
        for attempt in 1..=self.config.tries.max(1) {
            match self.try_once(&body)? {
                Ok(reply) => return Ok(reply),
                Err(wait) if attempt < self.config.tries => {
                    std::thread::sleep(wait.max(backoff));
                    backoff = backoff.saturating_mul(2);
                }
                Err(_) => {}
            }
        }
        Err(llm_error(format!(
            "{} did not answer after {} tries (rate limited, failing or too slow)",
            self.endpoint(),
            self.config.tries
        )))
    }
}
