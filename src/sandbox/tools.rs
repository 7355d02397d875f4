//! Host tools: functions of the embedder that guest code calls through the host door. Each
//! call is bounded (its own timeout, payload caps, a per-run budget, the run's deadline and
//! cancellation) and recorded in the outcome's `tool_calls`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::CancelHandle;
use crate::error::Error;
use crate::outcome::ToolCall;

/// What a tool does with its arguments: a JSON value back, or an error message the guest
/// sees as an exception.
pub type ToolHandler = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// How long one call may take unless the tool says otherwise.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Names a guest module defines beside the tools, which a tool may not take: what Python's
/// `dvm_tools` exports, and the names JavaScript's `dvm:tools` module declares for itself.
const RESERVED_NAMES: &[&str] = &[
    "call",
    "tools",
    "ToolError",
    "door",
    "specs",
    "qualified",
    "make",
    "group",
];

/// Python's keywords: a tool's name and its parameters' names become Python names.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// A named function of the embedder that guest code can call.
#[derive(Clone)]
pub struct HostTool {
    name: String,
    /// The module the tool is in, under `dvm_tools` (an MCP server's name in code mode).
    group: Option<String>,
    description: String,
    parameters: Value,
    handler: ToolHandler,
    timeout: Duration,
}

impl std::fmt::Debug for HostTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTool")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a Python keyword, a name the guest modules keep for themselves, or a
/// dunder-like name (`__all__`, `__dict__`…, which a module's attributes cannot take): a
/// tool or a group may not be called so.
pub(crate) fn is_reserved(name: &str) -> bool {
    KEYWORDS.contains(&name) || RESERVED_NAMES.contains(&name) || name.starts_with("__")
}

/// Whether `name` can be a Python (and JavaScript) identifier of at most 64 characters.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
}

impl HostTool {
    /// A tool named `name` (an identifier: it becomes a function in the guest), described
    /// for the guest's docstring, whose arguments are the JSON object `parameters` describes
    /// (a JSON schema of `"type": "object"`; its property names become the function's
    /// parameters). `handler` runs on a thread of its own for each call.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Result<HostTool, Error> {
        let name = name.into();
        if !is_identifier(&name) || is_reserved(&name) {
            return Err(Error::InvalidInput(format!(
                "`{name}` cannot name a host tool: use letters, digits and `_` (not first), at \
                 most 64, not starting with `__`, not a Python keyword nor one of \
                 {RESERVED_NAMES:?}"
            )));
        }
        let schema = match parameters {
            Value::Null => serde_json::json!({"type": "object", "properties": {}}),
            Value::Object(schema) => Value::Object(schema),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "the parameters of tool `{name}` must be a JSON schema object"
                )));
            }
        };
        if let Some(kind) = schema.get("type")
            && kind != "object"
        {
            return Err(Error::InvalidInput(format!(
                "the parameters of tool `{name}` must be of type \"object\", not {kind}"
            )));
        }
        if let Some(properties) = schema.get("properties") {
            let Some(properties) = properties.as_object() else {
                return Err(Error::InvalidInput(format!(
                    "the `properties` of tool `{name}` must be an object"
                )));
            };
            // Parameters are passed by name (any name a JSON object can have), and by
            // position in the schema's order; the guest's docstring shows them.
            if let Some(bad) = properties
                .keys()
                .find(|key| key.is_empty() || key.len() > 128 || key.chars().any(char::is_control))
            {
                return Err(Error::InvalidInput(format!(
                    "tool `{name}` has a parameter `{}` that is empty, over 128 bytes or has \
                     control characters",
                    bad.escape_debug()
                )));
            }
        }
        Ok(HostTool {
            name,
            group: None,
            description: description.into(),
            parameters: schema,
            handler: Arc::new(handler),
            timeout: DEFAULT_TOOL_TIMEOUT,
        })
    }

    /// A tool whose handler is asynchronous; each call's future is driven to completion on
    /// the call's own thread (so it must not need a particular async runtime's reactor:
    /// hand it a runtime's `Handle` and spawn on it from inside if it does).
    pub fn new_async<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Result<HostTool, Error>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        HostTool::new(name, description, parameters, move |args| {
            block_on(handler(args))
        })
    }

    /// Gives each call at most `timeout` (default [`DEFAULT_TOOL_TIMEOUT`]); the run's
    /// deadline bounds it too.
    pub fn with_timeout(mut self, timeout: Duration) -> HostTool {
        self.timeout = timeout;
        self
    }

    /// Puts the tool in the module `dvm_tools.GROUP` (an identifier, as a tool's name is):
    /// `from dvm_tools.GROUP import NAME` in Python, and called as `GROUP.NAME`.
    pub fn in_group(mut self, group: impl Into<String>) -> Result<HostTool, Error> {
        let group = group.into();
        if !is_identifier(&group) || is_reserved(&group) {
            return Err(Error::InvalidInput(format!(
                "`{group}` cannot name a group of host tools: use letters, digits and `_` (not \
                 first), at most 64, not starting with `__`, not a Python keyword nor one of \
                 {RESERVED_NAMES:?}"
            )));
        }
        self.group = Some(group);
        Ok(self)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The name calls use: `GROUP.NAME`, or `NAME` outside a group.
    pub fn qualified_name(&self) -> String {
        match &self.group {
            Some(group) => format!("{group}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// What the guest is told about the tool: `{name, group?, description, parameters}`.
    pub fn spec(&self) -> Value {
        let mut spec = serde_json::json!({
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        });
        if let Some(group) = &self.group {
            spec["group"] = Value::from(group.as_str());
        }
        spec
    }
}

/// Drives `future` to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

/// The tools of a run or a session, with the bounds every call is held to.
#[derive(Clone, Debug)]
pub struct HostTools {
    tools: Vec<HostTool>,
    /// Calls one run may make; the next one stops the run (`limit: "tool_calls"`).
    pub max_calls: u32,
    /// The largest request (the JSON of a call with its arguments) read from the guest.
    pub max_request_bytes: u64,
    /// The largest answer handed back; a larger one becomes an error for the guest.
    pub max_response_bytes: u64,
}

impl Default for HostTools {
    fn default() -> Self {
        HostTools {
            tools: Vec::new(),
            max_calls: 1_000,
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
        }
    }
}

impl HostTools {
    pub fn new() -> HostTools {
        HostTools::default()
    }

    /// Adds `tool`; a second tool of the same name (in the same group), or a tool named as
    /// a group, is refused.
    pub fn with(mut self, tool: HostTool) -> Result<HostTools, Error> {
        let qualified = tool.qualified_name();
        if self.get(&qualified).is_some() {
            return Err(Error::InvalidInput(format!(
                "two host tools are named `{qualified}`"
            )));
        }
        let clash = |named: &HostTool, group: &HostTool| {
            named.group.is_none() && group.group.as_deref() == Some(named.name.as_str())
        };
        if self
            .tools
            .iter()
            .any(|other| clash(&tool, other) || clash(other, &tool))
        {
            return Err(Error::InvalidInput(format!(
                "the host tool `{qualified}` and a group of tools have one name"
            )));
        }
        self.tools.push(tool);
        Ok(self)
    }

    /// These tools and `other`'s together (the bounds are these tools').
    pub fn merged(&self, other: &HostTools) -> Result<HostTools, Error> {
        let mut merged = HostTools {
            tools: Vec::new(),
            ..self.clone()
        };
        for tool in self.tools.iter().chain(&other.tools) {
            merged = merged.with(tool.clone())?;
        }
        Ok(merged)
    }

    pub fn tools(&self) -> &[HostTool] {
        &self.tools
    }

    /// The tool a call names: `NAME`, or `GROUP.NAME`.
    pub(crate) fn get(&self, name: &str) -> Option<&HostTool> {
        let (group, name) = match name.split_once('.') {
            Some((group, name)) => (Some(group), name),
            None => (None, name),
        };
        self.tools
            .iter()
            .find(|tool| tool.name == name && tool.group.as_deref() == group)
    }
}

/// The tools bound to the current run or turn, and the calls made so far.
#[derive(Default)]
pub(crate) struct ToolDoor {
    tools: Option<Arc<HostTools>>,
    calls: Vec<ToolCall>,
}

/// How a call the door waited on ended.
pub(crate) enum Waited {
    /// The tool answered (or failed, or timed out): the guest hears of it.
    Answer(Result<Value, String>),
    /// The run's deadline passed while the tool ran.
    Deadline,
    /// The run was cancelled while the tool ran.
    Cancelled,
}

impl ToolDoor {
    pub(crate) fn new(tools: Option<Arc<HostTools>>) -> ToolDoor {
        ToolDoor {
            tools,
            calls: Vec::new(),
        }
    }

    pub(crate) fn tools(&self) -> Option<&Arc<HostTools>> {
        self.tools.as_ref()
    }

    /// Calls made so far in this run.
    pub(crate) fn made(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn record(&mut self, call: ToolCall) {
        self.calls.push(call);
    }

    /// The calls so far, at the end of a run or turn: the record is empty afterwards and the
    /// tools are unbound (a session's door outlives the turn they were bound to).
    pub(crate) fn take(&mut self) -> Vec<ToolCall> {
        self.tools = None;
        std::mem::take(&mut self.calls)
    }
}

/// Runs `tool` on `args` on a thread of its own and waits for its answer: at most the tool's
/// timeout, never past `deadline`, and not after `cancel`. A tool that does not answer in
/// time is left to finish on its own thread; its answer is dropped.
pub(crate) fn call(
    tool: &HostTool,
    args: Value,
    deadline: Instant,
    cancel: &CancelHandle,
) -> Waited {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let handler = tool.handler.clone();
    let started = std::thread::Builder::new()
        .name(format!("dvm-tool-{}", tool.name))
        .spawn(move || {
            let _ = answer.send(handler(args));
        });
    if let Err(e) = started {
        return Waited::Answer(Err(format!("the host could not start the tool: {e}")));
    }
    let now = Instant::now();
    let own = now + tool.timeout;
    let until = own.min(deadline);
    loop {
        let now = Instant::now();
        if now >= until {
            return if until == own && own < deadline {
                Waited::Answer(Err(format!(
                    "the tool `{}` did not answer within {} ms",
                    tool.name,
                    tool.timeout.as_millis()
                )))
            } else {
                Waited::Deadline
            };
        }
        if cancel.is_cancelled() {
            return Waited::Cancelled;
        }
        let slice = (until - now).min(Duration::from_millis(10));
        match answered.recv_timeout(slice) {
            Ok(answer) => return Waited::Answer(answer),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Waited::Answer(Err(format!(
                    "the tool `{}` failed without an answer",
                    tool.name
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_schemas_that_cannot_be_python_are_refused() {
        let ok = |_: Value| Ok(Value::Null);
        for bad in [
            "",
            "9lives",
            "a-b",
            "class",
            "call",
            "tools",
            &"x".repeat(65),
            // Module attributes Python will not let a tool take, and the JavaScript module's
            // own names.
            "__all__",
            "__dict__",
            "__class__",
            "make",
            "group",
            "door",
        ] {
            assert!(HostTool::new(bad, "", Value::Null, ok).is_err(), "{bad:?}");
            let tool = HostTool::new("search", "", Value::Null, ok).unwrap();
            assert!(tool.in_group(bad).is_err(), "group {bad:?}");
        }
        assert!(HostTool::new("_private", "", Value::Null, ok).is_ok());
        assert!(HostTool::new("search", "", serde_json::json!([1]), ok).is_err());
        assert!(HostTool::new("search", "", serde_json::json!({"type": "string"}), ok).is_err());
        let bad_param = serde_json::json!({"type": "object", "properties": {"a\nb": {}}});
        assert!(HostTool::new("search", "", bad_param, ok).is_err());
        let dashed = serde_json::json!({"type": "object", "properties": {"repo-name": {}}});
        assert!(HostTool::new("search", "", dashed, ok).is_ok());
        let grouped = HostTool::new("search", "", Value::Null, ok)
            .unwrap()
            .in_group("github")
            .unwrap();
        assert_eq!(grouped.qualified_name(), "github.search");
        assert_eq!(grouped.spec()["group"], "github");
        assert!(grouped.clone().in_group("not a group").is_err());
        let github = HostTool::new("github", "", Value::Null, ok).unwrap();
        let both = HostTools::new().with(grouped.clone()).unwrap();
        assert!(
            both.clone().with(github).is_err(),
            "a tool named as a group"
        );
        assert!(both.get("github.search").is_some() && both.get("search").is_none());
        let tool = HostTool::new("search", "Finds.", Value::Null, ok).unwrap();
        assert_eq!(tool.spec()["parameters"]["type"], "object");
        let tools = HostTools::new().with(tool.clone()).unwrap();
        assert!(tools.with(tool).is_err(), "two tools of one name");
    }

    #[test]
    fn a_call_waits_for_its_answer_its_timeout_or_the_deadline() {
        let cancel = CancelHandle::new();
        let far = Instant::now() + Duration::from_secs(60);
        let double = HostTool::new("double", "", Value::Null, |v: Value| {
            Ok(Value::from(v["n"].as_i64().unwrap_or(0) * 2))
        })
        .unwrap();
        assert!(matches!(
            call(&double, serde_json::json!({"n": 21}), far, &cancel),
            Waited::Answer(Ok(v)) if v == 42
        ));
        let slow = HostTool::new("slow", "", Value::Null, |_| {
            std::thread::sleep(Duration::from_secs(5));
            Ok(Value::Null)
        })
        .unwrap()
        .with_timeout(Duration::from_millis(50));
        assert!(matches!(
            call(&slow, Value::Null, far, &cancel),
            Waited::Answer(Err(e)) if e.contains("did not answer within 50 ms")
        ));
        let soon = Instant::now() + Duration::from_millis(30);
        let slow = slow.with_timeout(Duration::from_secs(10));
        assert!(matches!(
            call(&slow, Value::Null, soon, &cancel),
            Waited::Deadline
        ));
        cancel.cancel();
        assert!(matches!(
            call(&slow, Value::Null, far, &cancel),
            Waited::Cancelled
        ));
        let failing = HostTool::new_async("failing", "", Value::Null, |_| async {
            Err("no such record".to_string())
        })
        .unwrap();
        assert!(matches!(
            call(&failing, Value::Null, far, &CancelHandle::new()),
            Waited::Answer(Err(e)) if e == "no such record"
        ));
    }
}
