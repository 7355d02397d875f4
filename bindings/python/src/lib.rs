//! `dvm` for Python: the sandbox engine in the same process (PyO3). The Python package
//! (`python/dvm/`) wraps these classes with module-level functions, `async` variants and
//! exceptions named by error kind.
//!
//! Every call that runs a guest releases the GIL, so Python threads run sandboxes at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMapping};

/// The largest output file `run` hands back (each).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Raises the exception of `dvm.errors` named after the error's kind (`invalid_input` →
/// `InvalidInput`), with `kind` set; `DvmError` when there is none of that name.
fn raise(py: Python<'_>, error: dvm::Error) -> PyErr {
    let kind = error.kind();
    let message = error.to_string();
    let name: String = kind
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let made = (|| -> PyResult<PyErr> {
        let errors = py.import("dvm.errors")?;
        let class = errors
            .getattr(name.as_str())
            .or_else(|_| errors.getattr("DvmError"))?;
        let instance = class.call1((message.clone(),))?;
        instance.setattr("kind", kind)?;
        Ok(PyErr::from_value(instance))
    })();
    made.unwrap_or_else(|e| e)
}

/// Limits of one run: each left out keeps dvm's default.
#[pyclass(module = "dvm", get_all, set_all)]
#[derive(Clone, Default)]
pub struct Limits {
    /// Wall-clock seconds.
    timeout: Option<f64>,
    /// Bytes of linear memory.
    memory: Option<u64>,
    /// Wasm instructions (roughly); none by default.
    fuel: Option<u64>,
    /// Bytes kept of each of stdout and stderr.
    max_output: Option<u64>,
    /// Bytes the run's files may take.
    disk: Option<u64>,
    /// Files the run may create.
    files: Option<u64>,
    /// Files open at once.
    open_files: Option<u64>,
}

#[pymethods]
impl Limits {
    #[new]
    #[pyo3(signature = (*, timeout=None, memory=None, fuel=None, max_output=None, disk=None, files=None, open_files=None))]
    fn new(
        timeout: Option<f64>,
        memory: Option<u64>,
        fuel: Option<u64>,
        max_output: Option<u64>,
        disk: Option<u64>,
        files: Option<u64>,
        open_files: Option<u64>,
    ) -> PyResult<Limits> {
        check_timeout(timeout)?;
        Ok(Limits {
            timeout,
            memory,
            fuel,
            max_output,
            disk,
            files,
            open_files,
        })
    }

    fn __repr__(&self) -> String {
        let show = |v: Option<String>| v.unwrap_or_else(|| "None".into());
        format!(
            "Limits(timeout={}, memory={}, fuel={}, max_output={}, disk={}, files={}, open_files={})",
            show(self.timeout.map(|t| t.to_string())),
            show(self.memory.map(|v| v.to_string())),
            show(self.fuel.map(|v| v.to_string())),
            show(self.max_output.map(|v| v.to_string())),
            show(self.disk.map(|v| v.to_string())),
            show(self.files.map(|v| v.to_string())),
            show(self.open_files.map(|v| v.to_string())),
        )
    }
}

/// A timeout is seconds: more than 0, at most a week.
fn check_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= 7.0 * 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(t)))
        }
        Some(_) => Err(PyValueError::new_err(
            "timeout is seconds: more than 0, at most a week",
        )),
    }
}

impl Limits {
    /// dvm's limits. The fields can be set after construction, so the timeout is checked
    /// again here.
    fn apply(&self) -> PyResult<dvm::Limits> {
        let mut limits = dvm::Limits::default();
        if let Some(deadline) = check_timeout(self.timeout)? {
            limits.deadline = deadline;
        }
        if let Some(m) = self.memory {
            limits.memory_bytes = m;
        }
        limits.fuel = self.fuel.or(limits.fuel);
        if let Some(o) = self.max_output {
            limits.stdout_bytes = o;
            limits.stderr_bytes = o;
        }
        if let Some(d) = self.disk {
            limits.disk_bytes = d;
        }
        if let Some(f) = self.files {
            limits.files = f;
        }
        if let Some(f) = self.open_files {
            limits.open_files = f;
        }
        Ok(limits)
    }
}

/// Stops a run from another thread (or an asyncio task being cancelled): pass one as
/// `cancel=` to `run`, then call `cancel()`; the run ends at once with status `limit`.
#[pyclass(module = "dvm", frozen)]
#[derive(Default)]
pub struct Cancel {
    handle: dvm::CancelHandle,
}

#[pymethods]
impl Cancel {
    #[new]
    fn new() -> Cancel {
        Cancel::default()
    }

    /// Stops the run this was given to (and any later one).
    fn cancel(&self) {
        self.handle.cancel();
    }
}

/// `value` as a dict: a dict itself, or a copy of any other mapping (`os.environ`).
fn as_dict<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    if let Ok(dict) = value.cast::<PyDict>() {
        return Ok(dict.clone());
    }
    let dict = PyDict::new(value.py());
    dict.update(value.cast::<PyMapping>()?)?;
    Ok(dict)
}

/// Environment variables from a mapping of str to str.
fn env_pairs(env: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(env) = env else {
        return Ok(Vec::new());
    };
    let pairs: BTreeMap<String, String> = as_dict(env)?.extract()?;
    Ok(pairs.into_iter().collect())
}

/// How a run ended and what it left.
#[pyclass(module = "dvm", get_all, frozen)]
pub struct Outcome {
    /// `ok`, `error`, `limit` or `crashed`.
    status: String,
    exit_code: Option<i32>,
    /// stdout as text (UTF-8, undecodable bytes replaced); `stdout_bytes` is exact.
    stdout: String,
    stderr: String,
    stdout_bytes: Py<PyBytes>,
    stderr_bytes: Py<PyBytes>,
    /// Which limit stopped the run (`deadline`, `fuel`, `memory`…), when one did.
    limit: Option<String>,
    /// Files the run created or changed: path → bytes (a session's: path → size).
    files: Py<PyDict>,
    /// Display items (figures, rich values): `{"data": {mime: form}}`.
    display: Py<PyList>,
    /// Wall-clock seconds.
    duration: f64,
    fuel_used: u64,
    memory_peak_bytes: u64,
    /// Host tool calls and HTTP requests, as in the JSON outcome.
    tool_calls: Py<PyList>,
    net: Py<PyList>,
    /// `hit`, `miss` or `off`.
    cache: String,
    json: String,
}

#[pymethods]
impl Outcome {
    /// Whether the program ran to the end and exited 0.
    #[getter]
    fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// The outcome as dvm's JSON (the CLI's `--json` shape).
    fn to_json(&self) -> String {
        self.json.clone()
    }

    fn __repr__(&self) -> String {
        let none = || "None".to_string();
        format!(
            "Outcome(status={:?}, exit_code={}, limit={}, stdout={:?})",
            self.status,
            self.exit_code.map_or_else(none, |c| c.to_string()),
            self.limit.as_ref().map_or_else(none, |l| format!("{l:?}")),
            self.stdout.chars().take(60).collect::<String>()
        )
    }
}

fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

fn outcome(
    py: Python<'_>,
    outcome: &dvm::Outcome,
    files: BTreeMap<String, Vec<u8>>,
) -> PyResult<Outcome> {
    let json = outcome.to_json();
    let list = |key: &str| -> PyResult<Py<PyList>> {
        let value = json
            .get(key)
            .cloned()
            .unwrap_or(serde_json::Value::Array(Vec::new()));
        Ok(json_to_py(py, &value)?.cast_into::<PyList>()?.unbind())
    };
    let file_dict = PyDict::new(py);
    for (path, bytes) in files {
        file_dict.set_item(path, PyBytes::new(py, &bytes))?;
    }
    Ok(Outcome {
        status: outcome.status.as_str().to_string(),
        exit_code: outcome.exit_code,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        stdout_bytes: PyBytes::new(py, &outcome.stdout).unbind(),
        stderr_bytes: PyBytes::new(py, &outcome.stderr).unbind(),
        limit: outcome.limit.map(|kind| kind.as_str().to_string()),
        files: file_dict.unbind(),
        display: list("display")?,
        duration: outcome.duration.as_secs_f64(),
        fuel_used: outcome.fuel_used,
        memory_peak_bytes: outcome.memory_peak_bytes,
        tool_calls: list("tool_calls")?,
        net: list("net")?,
        cache: json["cache"].as_str().unwrap_or("off").to_string(),
        json: json.to_string(),
    })
}

/// A Python callable as a host tool: called with the guest's arguments as keyword
/// arguments; what it returns goes back as JSON, an exception as the guest's ToolError.
fn host_tool(py: Python<'_>, tool: &Bound<'_, PyAny>) -> PyResult<dvm::HostTool> {
    let spec = match tool.cast::<PyMapping>() {
        Ok(_) => Some(as_dict(tool)?),
        Err(_) => None,
    };
    let (function, name, description, parameters) = if let Some(spec) = spec {
        let function = spec
            .get_item("function")?
            .ok_or_else(|| PyValueError::new_err("a tool dict needs `function`"))?;
        let name: String = match spec.get_item("name")? {
            Some(name) => name.extract()?,
            None => function.getattr("__name__")?.extract()?,
        };
        let description: String = match spec.get_item("description")? {
            Some(text) => text.extract()?,
            None => doc_of(&function),
        };
        let parameters = match spec.get_item("parameters")? {
            Some(schema) => py
                .import("json")?
                .call_method1("dumps", (schema,))?
                .extract::<String>()?,
            None => "null".to_string(),
        };
        (function.unbind(), name, description, parameters)
    } else {
        let name: String = tool.getattr("__name__")?.extract()?;
        let description = doc_of(tool);
        (tool.clone().unbind(), name, description, "null".to_string())
    };
    let parameters: serde_json::Value = match parameters.as_str() {
        "null" => signature_schema(py, function.bind(py))?,
        text => serde_json::from_str(text)
            .map_err(|e| PyValueError::new_err(format!("tool `{name}`: parameters: {e}")))?,
    };
    let function = Arc::new(function);
    dvm::HostTool::new(name, description, parameters, move |args| {
        Python::attach(|py| {
            let call = || -> PyResult<serde_json::Value> {
                let kwargs = json_to_py(py, &args)?;
                let kwargs = kwargs.cast::<PyDict>()?;
                let result = function.bind(py).call((), Some(kwargs))?;
                let text: String = py
                    .import("json")?
                    .call_method1("dumps", (result,))?
                    .extract()?;
                serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))
            };
            call().map_err(|e| e.to_string())
        })
    })
    .map_err(|e| raise(py, e))
}

/// A JSON schema of `function`'s parameters, from its signature: each named parameter a
/// property (typed when annotated with int, float, str, bool, list or dict), those without
/// a default required.
fn signature_schema(py: Python<'_>, function: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let inspect = py.import("inspect")?;
    let empty = inspect.getattr("Parameter")?.getattr("empty")?;
    let signature = inspect.call_method1("signature", (function,))?;
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for parameter in signature
        .getattr("parameters")?
        .call_method0("values")?
        .try_iter()?
    {
        let parameter = parameter?;
        let kind: String = parameter.getattr("kind")?.getattr("name")?.extract()?;
        if kind == "VAR_POSITIONAL" || kind == "VAR_KEYWORD" {
            continue;
        }
        let name: String = parameter.getattr("name")?.extract()?;
        let annotation = parameter.getattr("annotation")?;
        let json_type = match annotation
            .getattr("__name__")
            .and_then(|n| n.extract::<String>())
        {
            Ok(n) if n == "int" => Some("integer"),
            Ok(n) if n == "float" => Some("number"),
            Ok(n) if n == "str" => Some("string"),
            Ok(n) if n == "bool" => Some("boolean"),
            Ok(n) if n == "list" => Some("array"),
            Ok(n) if n == "dict" => Some("object"),
            _ => None,
        };
        let mut property = serde_json::Map::new();
        if let Some(json_type) = json_type {
            property.insert("type".into(), json_type.into());
        }
        properties.insert(name.clone(), property.into());
        if parameter.getattr("default")?.is(&empty) {
            required.push(serde_json::Value::from(name));
        }
    }
    Ok(serde_json::json!({"type": "object", "properties": properties, "required": required}))
}

fn host_tools(
    py: Python<'_>,
    tools: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Arc<dvm::HostTools>>> {
    let Some(tools) = tools else { return Ok(None) };
    let mut all = dvm::HostTools::new();
    for tool in tools.try_iter()? {
        all = all.with(host_tool(py, &tool?)?).map_err(|e| raise(py, e))?;
    }
    Ok(Some(Arc::new(all)))
}

fn net_policy(
    py: Python<'_>,
    allow_net: Option<Vec<String>>,
) -> PyResult<Option<Arc<dvm::NetPolicy>>> {
    match allow_net {
        None => Ok(None),
        Some(hosts) if hosts.is_empty() => Ok(None),
        Some(hosts) => dvm::NetPolicy::parse(hosts)
            .map(|policy| Some(Arc::new(policy)))
            .map_err(|e| raise(py, e)),
    }
}

/// The bytes of a `str` (UTF-8) or of a bytes-like value.
fn text_or_bytes(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    match value.extract::<String>() {
        Ok(text) => Ok(text.into_bytes()),
        Err(_) => value.extract::<Vec<u8>>(),
    }
}

/// A callable's docstring, or nothing.
fn doc_of(function: &Bound<'_, PyAny>) -> String {
    function
        .getattr("__doc__")
        .ok()
        .and_then(|doc| doc.extract::<String>().ok())
        .unwrap_or_default()
}

/// Writes `files` (path → bytes or str) into `workspace`.
fn upload(
    py: Python<'_>,
    workspace: &dvm::Workspace,
    files: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let Some(files) = files else { return Ok(()) };
    for (path, content) in as_dict(files)?.iter() {
        let path: String = path.extract()?;
        let bytes = text_or_bytes(&content)?;
        workspace.write(&path, &bytes).map_err(|e| raise(py, e))?;
    }
    Ok(())
}

/// One dvm engine: its home (runtimes, caches, snapshots) and its compiled modules.
#[pyclass(module = "dvm", frozen)]
pub struct Dvm {
    inner: dvm::Dvm,
}

#[pymethods]
impl Dvm {
    /// An engine on `home` (default: `$DVM_HOME`, else dvm's home directory).
    #[new]
    #[pyo3(signature = (home=None))]
    fn new(py: Python<'_>, home: Option<std::path::PathBuf>) -> PyResult<Dvm> {
        let mut config = dvm::Config::from_env();
        if let Some(home) = home {
            config.home = home;
        }
        py.detach(|| dvm::Dvm::new(config))
            .map(|inner| Dvm { inner })
            .map_err(|e| raise(py, e))
    }

    /// Runs `code` in a fresh sandbox and returns its outcome. Installs the runtime and
    /// `requirements` on first use. The GIL is released while it runs.
    #[pyo3(signature = (code, runtime="python", *, files=None, stdin=None, args=None, env=None, limits=None, requirements=None, seed=None, cache=true, tools=None, allow_net=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        code: &str,
        runtime: &str,
        files: Option<&Bound<'_, PyAny>>,
        stdin: Option<&Bound<'_, PyAny>>,
        args: Option<Vec<String>>,
        env: Option<&Bound<'_, PyAny>>,
        limits: Option<Limits>,
        requirements: Option<Vec<String>>,
        seed: Option<u64>,
        cache: bool,
        tools: Option<&Bound<'_, PyAny>>,
        allow_net: Option<Vec<String>>,
        cancel: Option<&Bound<'_, Cancel>>,
    ) -> PyResult<Outcome> {
        let workspace = dvm::Workspace::new().map_err(|e| raise(py, e))?;
        upload(py, &workspace, files)?;
        let stdin = match stdin {
            None => Vec::new(),
            Some(value) => text_or_bytes(value)?,
        };
        let mut job = dvm::Job::code(runtime, code.as_bytes().to_vec());
        job.requirements = requirements.unwrap_or_default();
        job.input = dvm::RunInput {
            args: args.unwrap_or_default(),
            env: env_pairs(env)?,
            stdin,
            limits: limits.unwrap_or_default().apply()?,
            workspace: Some(workspace.clone()),
            deterministic: seed.map(|seed| dvm::Determinism { seed }),
            cache: if cache {
                dvm::results::CacheMode::Auto
            } else {
                dvm::results::CacheMode::Off
            },
            tools: host_tools(py, tools)?,
            net: net_policy(py, allow_net)?,
            cancel: cancel.map(|cancel| cancel.get().handle.clone()),
            ..dvm::RunInput::default()
        };
        let engine = self.inner.clone();
        let ran = py.detach(move || -> Result<_, dvm::Error> {
            let quiet: dvm::Progress = Arc::new(|_| {});
            let done = engine.run(&job, &quiet)?;
            let mut files = BTreeMap::new();
            for file in &done.outcome.files {
                if file.size <= MAX_FILE_BYTES
                    && let Ok(bytes) = workspace.read(&file.path, MAX_FILE_BYTES)
                {
                    files.insert(file.path.clone(), bytes);
                }
            }
            Ok((done.outcome, files))
        });
        let (ran, files) = ran.map_err(|e| raise(py, e))?;
        outcome(py, &ran, files)
    }

    /// Benchmark aid: runs `code` `count` times the way `run` does (a fresh workspace, the
    /// job, the outcome's files read back) without making Python objects, with the GIL
    /// released, and returns the mean seconds per run. `run`'s mean minus this is the
    /// Python layer's own cost.
    #[pyo3(signature = (code, runtime="python", count=100))]
    fn _native_loop(&self, py: Python<'_>, code: &str, runtime: &str, count: u32) -> PyResult<f64> {
        let engine = self.inner.clone();
        let (code, runtime) = (code.to_string(), runtime.to_string());
        py.detach(move || -> Result<f64, dvm::Error> {
            let quiet: dvm::Progress = Arc::new(|_| {});
            let started = std::time::Instant::now();
            for _ in 0..count {
                let workspace = dvm::Workspace::new()?;
                let mut job = dvm::Job::code(&runtime, code.as_bytes().to_vec());
                job.input = dvm::RunInput {
                    workspace: Some(workspace.clone()),
                    cache: dvm::results::CacheMode::Off,
                    ..dvm::RunInput::default()
                };
                let done = engine.run(&job, &quiet)?;
                for file in &done.outcome.files {
                    let _ = workspace.read(&file.path, MAX_FILE_BYTES);
                }
                let _ = done.outcome.to_json();
            }
            Ok(started.elapsed().as_secs_f64() / f64::from(count.max(1)))
        })
        .map_err(|e| raise(py, e))
    }

    /// Opens a session: one interpreter kept alive across `Session.run` calls.
    #[pyo3(signature = (runtime="python", *, files=None, env=None, requirements=None))]
    fn session(
        &self,
        py: Python<'_>,
        runtime: &str,
        files: Option<&Bound<'_, PyAny>>,
        env: Option<&Bound<'_, PyAny>>,
        requirements: Option<Vec<String>>,
    ) -> PyResult<Session> {
        let workspace = dvm::Workspace::new().map_err(|e| raise(py, e))?;
        upload(py, &workspace, files)?;
        let engine = self.inner.clone();
        let runtime = runtime.to_string();
        let requirements = requirements.unwrap_or_default();
        let env = env_pairs(env)?;
        py.detach(move || -> Result<dvm::Session, dvm::Error> {
            let runtime = engine.runtime(&runtime)?;
            let packages = match requirements.is_empty() {
                true => None,
                false => Some(runtime.install_packages(&dvm::PackageRequest {
                    requirements,
                    ..dvm::PackageRequest::default()
                })?),
            };
            runtime.session(dvm::SessionOptions {
                workspace: Some(workspace),
                packages,
                env,
            })
        })
        .map(Session::new)
        .map_err(|e| raise(py, e))
    }

    /// A new session from a snapshot (`Session.snapshot()`), in `runtime`.
    #[pyo3(signature = (snapshot_id, runtime="python"))]
    fn resume(&self, py: Python<'_>, snapshot_id: &str, runtime: &str) -> PyResult<Session> {
        let engine = self.inner.clone();
        let (id, runtime) = (snapshot_id.to_string(), runtime.to_string());
        py.detach(move || engine.runtime(&runtime)?.resume(&id))
            .map(Session::new)
            .map_err(|e| raise(py, e))
    }
}

/// A live interpreter: variables and imports stay between calls.
#[pyclass(module = "dvm", frozen)]
pub struct Session {
    /// Taken only when the Python object goes away.
    inner: Option<dvm::Session>,
}

impl Session {
    fn new(inner: dvm::Session) -> Session {
        Session { inner: Some(inner) }
    }

    fn inner(&self) -> &dvm::Session {
        self.inner
            .as_ref()
            .expect("a live Session object holds its session")
    }
}

/// Closing waits for the guest (a turn in progress, then its atexit handlers for up to 5
/// s): a session dropped by Python, with the GIL held, is closed on a thread of its own.
impl Drop for Session {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && inner.is_open()
        {
            // Were no thread to be had, the closure would be dropped here, closing it.
            let _ = std::thread::Builder::new()
                .name("dvm-session-close".into())
                .spawn(move || inner.close());
        }
    }
}

#[pymethods]
impl Session {
    /// Runs `code` in the session; a final bare expression is echoed on stdout.
    #[pyo3(signature = (code, *, stdin=None, limits=None, tools=None, allow_net=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        code: &str,
        stdin: Option<String>,
        limits: Option<Limits>,
        tools: Option<&Bound<'_, PyAny>>,
        allow_net: Option<Vec<String>>,
        cancel: Option<&Bound<'_, Cancel>>,
    ) -> PyResult<Outcome> {
        let input = dvm::RunInput {
            stdin: stdin.unwrap_or_default().into_bytes(),
            limits: limits.unwrap_or_default().apply()?,
            tools: host_tools(py, tools)?,
            net: net_policy(py, allow_net)?,
            cancel: cancel.map(|cancel| cancel.get().handle.clone()),
            ..dvm::RunInput::default()
        };
        let code = code.to_string();
        let ran = py
            .detach(|| self.inner().run(&code, &input))
            .map_err(|e| raise(py, e))?;
        let sizes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let made = outcome(py, &ran, sizes)?;
        {
            let files = made.files.bind(py);
            for file in &ran.files {
                files.set_item(&file.path, file.size)?;
            }
        }
        Ok(made)
    }

    /// Writes a file into the session's workspace.
    fn write_file(&self, py: Python<'_>, path: &str, content: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = text_or_bytes(content)?;
        self.inner()
            .workspace()
            .write(path, &bytes)
            .map_err(|e| raise(py, e))
    }

    /// Reads a file of the session's workspace (at most 64 MiB).
    fn read_file<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self
            .inner()
            .workspace()
            .read(path, MAX_FILE_BYTES)
            .map_err(|e| raise(py, e))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Saves the session (memory, clock, files) under `$DVM_HOME`; returns the snapshot's id.
    fn snapshot(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner().snapshot())
            .map_err(|e| raise(py, e))
    }

    /// `count` independent copies of the session as it stands (at most 64).
    #[pyo3(signature = (count=1))]
    fn fork(&self, py: Python<'_>, count: usize) -> PyResult<Vec<Session>> {
        py.detach(|| self.inner().fork(count))
            .map(|copies| copies.into_iter().map(Session::new).collect())
            .map_err(|e| raise(py, e))
    }

    #[getter]
    fn is_open(&self) -> bool {
        self.inner().is_open()
    }

    /// Ends the interpreter (later calls raise SessionClosed). It waits for a turn in
    /// progress and the guest's atexit handlers (at most 5 s), without the GIL.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner().close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }
}

#[pymodule]
fn _dvm(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Dvm>()?;
    module.add_class::<Session>()?;
    module.add_class::<Limits>()?;
    module.add_class::<Outcome>()?;
    module.add_class::<Cancel>()?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
