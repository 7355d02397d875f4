//! Allow-listed HTTP: guest requests go through the host to the hosts a run allows and
//! nowhere else. A loopback server of the test's own sees every request that arrives, so
//! each refusal is checked on the host: nothing was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvm::{LimitKind, NetPolicy, RunInput, Status};

use crate::support::*;

/// A request the loopback server received: method, path, headers (lower-case names), body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on 127.0.0.1 with a few routes; it records what arrives.
pub(crate) struct Server {
    pub(crate) port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub(crate) fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, port, &log);
                });
            }
        });
        Server { port, seen }
    }

    pub(crate) fn paths(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn allowing(&self, edit: impl FnOnce(&mut NetPolicy)) -> RunInput {
        let mut policy = NetPolicy::parse([format!("127.0.0.1:{}", self.port)]).unwrap();
        edit(&mut policy);
        RunInput {
            net: Some(Arc::new(policy)),
            ..RunInput::default()
        }
    }
}

fn serve(stream: TcpStream, port: u16, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        log.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
            body: body.clone(),
        });
        let reply = |status: &str, extra: &str, body: &[u8]| {
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        };
        let out = match path.as_str() {
            "/hello" => reply("200 OK", "X-Answer: 42\r\n", b"hello"),
            "/echo" => {
                let mut echoed = format!("{method} ").into_bytes();
                echoed.extend_from_slice(&body);
                reply("201 Created", "", &echoed)
            }
            "/redirect-in" => reply("302 Found", "Location: /hello\r\n", b""),
            "/redirect-out" => reply(
                "302 Found",
                &format!("Location: http://localhost:{port}/hello\r\n"),
                b"",
            ),
            "/big" => reply("200 OK", "", &vec![b'x'; 64 * 1024]),
            "/login" => reply("200 OK", "Set-Cookie: token=abc; Path=/\r\n", b"in"),
            "/whoami" => {
                let cookie = log.lock().unwrap().last().and_then(|seen| {
                    seen.headers
                        .iter()
                        .find(|(name, _)| name == "cookie")
                        .map(|(_, value)| value.clone())
                });
                reply("200 OK", "", cookie.unwrap_or_default().as_bytes())
            }
            // `/to/PORT/PATH`: a redirect to PATH on another port (another origin).
            to if to.starts_with("/to/") => {
                let rest = &to[4..];
                let (other, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                reply(
                    "302 Found",
                    &format!("Location: http://127.0.0.1:{other}{path}\r\n"),
                    b"",
                )
            }
            "/slow" => {
                stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\n",
                )?;
                for _ in 0..100_000 {
                    stream.write_all(b"x")?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Ok(());
            }
            _ => reply("404 Not Found", "", b"no such page"),
        };
        stream.write_all(&out)?;
    }
}

fn python(code: &str, input: &RunInput) -> dvm::Outcome {
    script("python", "main.py", code, input)
}

#[test]
fn python_reaches_the_allowed_host_and_nothing_else() {
    let server = Server::start();
    let port = server.port;
    let input = server.allowing(|policy| policy.max_response_bytes = 1000);
    let code = format!(
        r#"
import urllib.request, urllib.error, http.client, json
base = "http://127.0.0.1:{port}"
with urllib.request.urlopen(base + "/hello") as r:
    print("urllib", r.status, r.headers["X-Answer"], r.read().decode())
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=5)
c.request("POST", "/echo", body=json.dumps({{"n": 1}}), headers={{"Content-Type": "application/json", "Host": "evil.example"}})
r = c.getresponse()
print("http.client", r.status, r.read().decode())
print("followed", urllib.request.urlopen(base + "/redirect-in").read().decode())
for url in ["http://127.0.0.1:1/hello", "http://user:pw@127.0.0.1:{port}/hello",
            base + "/redirect-out", base + "/big"]:
    try:
        urllib.request.urlopen(url)
        print("reached", url)
    except urllib.error.URLError as e:
        print("refused", url, "|", e.reason)
    except Exception as e:
        print("failed", url, "|", type(e).__name__)
"#
    );
    let outcome = python(&code, &input);
    expect_status(&outcome, Status::Ok);
    let out = stdout(&outcome);
    assert!(out.contains("urllib 200 42 hello\n"), "{out}");
    assert!(out.contains(r#"http.client 201 POST {"n": 1}"#), "{out}");
    assert!(out.contains("followed hello\n"), "{out}");
    assert!(
        out.contains("refused http://127.0.0.1:1/hello | 127.0.0.1:1 is not an allowed host"),
        "{out}"
    );
    assert!(out.contains("refused http://user:pw@"), "{out}");
    assert!(
        out.contains(&format!(
            "refused {}/redirect-out | localhost:{port} is not an allowed host",
            server.url("")
        )),
        "{out}"
    );
    assert!(out.contains("over the cap of 1000 bytes"), "{out}");
    assert!(!out.contains("reached"), "{out}");
    // What reached the server: only the allowed requests, never the redirect's target.
    assert_eq!(
        server.paths(),
        [
            "GET /hello",
            "POST /echo",
            "GET /redirect-in",
            "GET /hello",
            "GET /redirect-out",
            "GET /big",
        ]
    );
    let seen = server.seen.lock().unwrap().clone();
    let echo = &seen[1];
    assert_eq!(echo.body, br#"{"n": 1}"#);
    let host = echo
        .headers
        .iter()
        .find(|(name, _)| name == "host")
        .unwrap();
    assert_eq!(
        host.1,
        format!("127.0.0.1:{port}"),
        "the guest cannot set Host"
    );
    // Every request is recorded, refused ones with their reason.
    let net = &outcome.net;
    assert_eq!(net.len(), 9, "{net:?}");
    assert_eq!(net[0].status, Some(200));
    assert_eq!(net[0].bytes, 5);
    assert_eq!(net[1].method, "POST");
    assert_eq!(net[1].status, Some(201));
    assert_eq!(net[2].status, Some(302));
    assert!(
        net[4].status.is_none()
            && net[4]
                .error
                .as_deref()
                .unwrap()
                .contains("not an allowed host")
    );
    assert!(
        net[8].error.as_deref().unwrap().contains("over the cap"),
        "{net:?}"
    );
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(json["net"][0]["url"], server.url("/hello"));
    assert!(json["net"][0]["ms"].is_number());
}

#[test]
fn a_name_resolving_to_an_internal_address_is_refused_unless_allowed_by_address() {
    let server = Server::start();
    let port = server.port;
    let by_name = RunInput {
        net: Some(Arc::new(
            NetPolicy::parse([format!("localhost:{port}")]).unwrap(),
        )),
        ..RunInput::default()
    };
    let code = format!(
        r#"
import urllib.request
try:
    urllib.request.urlopen("http://localhost:{port}/hello")
except OSError as e:
    print("refused:", e.reason)
"#
    );
    let outcome = python(&code, &by_name);
    expect_status(&outcome, Status::Ok);
    let out = stdout(&outcome);
    assert!(
        out.contains("localhost resolves to 127.0.0.1, an internal address"),
        "{out}"
    );
    assert!(server.paths().is_empty(), "{:?}", server.paths());
    // Named by address too: allowed.
    // An entry of the address opens it to URLs that write the address, not to names that
    // resolve to it.
    let both = RunInput {
        net: Some(Arc::new(
            NetPolicy::parse([format!("localhost:{port}"), format!("127.0.0.1:{port}")]).unwrap(),
        )),
        ..RunInput::default()
    };
    let outcome = python(
        &format!(
            "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{port}/hello').read())\n\
             try:\n    urllib.request.urlopen('http://localhost:{port}/hello')\nexcept OSError as e:\n    print(e.reason)"
        ),
        &both,
    );
    let out = stdout(&outcome);
    assert!(out.starts_with("b'hello'\n"), "{}", describe(&outcome));
    assert!(out.contains("write the address in the URL"), "{out}");
    assert_eq!(server.paths(), ["GET /hello"]);
    // A resolver that answers with a private address (as a hostile DNS server would).
    let rebinding: dvm::Resolver = Arc::new(|_: &str| Ok(vec!["10.1.2.3".parse().unwrap()]));
    let hostile = RunInput {
        net: Some(Arc::new(
            NetPolicy::parse(["data.example.com"])
                .unwrap()
                .with_resolver(rebinding),
        )),
        ..RunInput::default()
    };
    let outcome = python(
        "import urllib.request\ntry:\n    urllib.request.urlopen('http://data.example.com/')\nexcept OSError as e:\n    print(e.reason)",
        &hostile,
    );
    assert!(
        stdout(&outcome).contains("data.example.com resolves to 10.1.2.3, an internal address"),
        "{}",
        describe(&outcome)
    );
}

#[test]
fn a_slow_body_stops_at_the_run_deadline() {
    let server = Server::start();
    let mut input = server.allowing(|_| {});
    input.limits.deadline = Duration::from_secs(2);
    let started = Instant::now();
    let outcome = python(
        &format!(
            "import urllib.request\nurllib.request.urlopen('{}').read()",
            server.url("/slow")
        ),
        &input,
    );
    let took = started.elapsed();
    expect_limit(
        &outcome,
        LimitKind::Deadline,
        "a body slower than the deadline",
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // A request's own timeout is an exception the guest can catch.
    let outcome = python(
        &format!(
            "import urllib.request\ntry:\n    urllib.request.urlopen('{}', timeout=0.5).read()\nexcept Exception as e:\n    print(type(e).__name__)",
            server.url("/slow")
        ),
        &server.allowing(|_| {}),
    );
    expect_status(&outcome, Status::Ok);
    assert!(
        stdout(&outcome).contains("TimeoutError") || stdout(&outcome).contains("URLError"),
        "{}",
        describe(&outcome)
    );
}

#[test]
fn requests_and_fetch_go_through_the_host() {
    let server = Server::start();
    let python = runtime("python");
    let packages = python
        .install_packages(&dvm::PackageRequest {
            requirements: vec!["requests".into()],
            ..dvm::PackageRequest::default()
        })
        .unwrap();
    let mut input = server.allowing(|_| {});
    input.packages = Some(packages);
    let code = format!(
        r#"
import requests
r = requests.get("{hello}", timeout=5)
print(r.status_code, r.headers["x-answer"], r.text)
r = requests.post("{echo}", json={{"a": [1, 2]}})
print(r.status_code, r.text)
try:
    requests.get("http://127.0.0.1:1/")
except requests.ConnectionError as e:
    print("refused")
session = requests.Session()
r = session.get("{login}")
print(r.cookies.get("token"), session.cookies.get("token"), session.get("{whoami}").text)
"#,
        hello = server.url("/hello"),
        echo = server.url("/echo"),
        login = server.url("/login"),
        whoami = server.url("/whoami"),
    );
    let outcome = python
        .run_script("main.py", code.as_bytes(), &input)
        .unwrap();
    assert_eq!(
        stdout(&outcome),
        "200 42 hello\n201 POST {\"a\": [1, 2]}\nrefused\nabc abc token=abc\n",
        "{}",
        describe(&outcome)
    );
    let js = format!(
        r#"
const r = await fetch("{hello}");
console.log(r.status, r.ok, r.headers.get("x-answer"), await r.text());
const p = await fetch("{echo}", {{ method: "POST", body: JSON.stringify({{ b: true }}) }});
console.log(p.status, await p.text());
const f = await fetch("{redirect}");
console.log(f.redirected, await f.text());
try {{ await fetch("{out}"); }} catch (e) {{ console.log(e.name, e.message.includes("not an allowed host")); }}
"#,
        hello = server.url("/hello"),
        echo = server.url("/echo"),
        redirect = server.url("/redirect-in"),
        out = server.url("/redirect-out"),
    );
    let outcome = script("javascript", "main.mjs", &js, &server.allowing(|_| {}));
    assert_eq!(
        stdout(&outcome),
        "200 true 42 hello\n201 POST {\"b\":true}\ntrue hello\nTypeError true\n",
        "{}",
        describe(&outcome)
    );
    assert_eq!(outcome.net.len(), 6, "{:?}", outcome.net);
}

#[test]
fn without_an_allow_list_nothing_leaves_and_determinism_refuses_the_network() {
    let server = Server::start();
    let outcome = python(
        &format!(
            "import urllib.request\ntry:\n    urllib.request.urlopen('{}')\nexcept Exception as e:\n    print(type(e).__name__)",
            server.url("/hello")
        ),
        &RunInput::default(),
    );
    assert!(!stdout(&outcome).is_empty(), "{}", describe(&outcome));
    // Every way out says why it is shut, warm, cold and in a session: never a missing
    // attribute of the guest's socket module.
    let probe = format!(
        "import socket, urllib.request, http.client\n\
         for attempt in (lambda: urllib.request.urlopen('{url}'),\n\
                         lambda: http.client.HTTPConnection('localhost', {port}).request('GET', '/'),\n\
                         lambda: socket.create_connection(('localhost', {port})),\n\
                         lambda: socket.gethostbyname('localhost')):\n\
         \x20   try:\n        attempt()\n        print('reached')\n\
         \x20   except Exception as e:\n        print(type(e).__name__, 'no network' in str(e))\n",
        url = server.url("/hello"),
        port = server.port,
    );
    let expected = "URLError True\nPermissionError True\nPermissionError True\n\
                    PermissionError True\n";
    let warm = python(&probe, &patient());
    assert_eq!(stdout(&warm), expected, "{}", describe(&warm));
    let cold = run_main(
        &shared().runtime_cold("python", &quiet()).unwrap(),
        &probe,
        &patient(),
    );
    assert_eq!(stdout(&cold), expected, "{}", describe(&cold));
    let session = runtime("python")
        .session(dvm::SessionOptions::default())
        .unwrap();
    let turn = session.run(&probe, &patient()).unwrap();
    assert_eq!(stdout(&turn), expected, "{}", describe(&turn));
    let outcome = script(
        "javascript",
        "main.mjs",
        &format!(
            "try {{ await fetch('{}'); }} catch (e) {{ console.log(e.message); }}",
            server.url("/hello")
        ),
        &RunInput::default(),
    );
    assert!(
        stdout(&outcome).contains("this run has no network"),
        "{}",
        describe(&outcome)
    );
    assert!(server.paths().is_empty(), "{:?}", server.paths());
    let mut input = server.allowing(|_| {});
    input.deterministic = Some(dvm::Determinism { seed: 1 });
    let error = runtime("python")
        .run_script("main.py", b"print(1)", &input)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("deterministic run cannot use the network"),
        "{error}"
    );
    for bad in ["http://example.com", "*", "example.com:0", ""] {
        assert!(NetPolicy::parse([bad]).is_err(), "{bad:?}");
    }
}

#[test]
fn the_cli_allows_hosts_and_never_uses_the_host_proxy() {
    let server = Server::start();
    // A proxy honeypot: the host's proxy settings must not reach it.
    let honeypot = TcpListener::bind("127.0.0.1:0").unwrap();
    honeypot.set_nonblocking(true).unwrap();
    let proxy = format!("http://127.0.0.1:{}", honeypot.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("get.py");
    std::fs::write(
        &path,
        format!(
            "import urllib.request\nprint(urllib.request.urlopen('{}').read().decode())",
            server.url("/hello")
        ),
    )
    .unwrap();
    let allow = format!("127.0.0.1:{}", server.port);
    let output = crate::cli::dvm_command(&[
        "run",
        "--json",
        "--allow-net",
        &allow,
        path.to_str().unwrap(),
    ])
    .env("HTTP_PROXY", &proxy)
    .env("http_proxy", &proxy)
    .env("ALL_PROXY", &proxy)
    .output()
    .unwrap();
    let json = crate::cli::json(&output);
    assert_eq!(json["stdout"], "hello\n", "{}", show(&output));
    assert_eq!(json["net"][0]["status"], 200);
    assert_eq!(json["net"][0]["bytes"], 5);
    assert!(honeypot.accept().is_err(), "the host's proxy was used");
    let output = crate::cli::dvm(&["run", "--allow-net", "http://x", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be an allowed host"));
}

#[test]
fn a_recorded_run_replays_without_the_network_deterministically_and_cached() {
    let server = Server::start();
    let allow = format!("127.0.0.1:{}", server.port);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("get.py");
    let marker = format!("{}", std::process::id() ^ server.port as u32);
    std::fs::write(
        &script,
        format!(
            "import urllib.request\n# {marker}\n\
             print(urllib.request.urlopen('{}').read().decode())\n\
             print(urllib.request.urlopen('{}', data=b'x').read().decode())",
            server.url("/hello"),
            server.url("/echo")
        ),
    )
    .unwrap();
    let recording = dir.path().join("exchanges.json");
    let (script, recording_arg) = (script.to_str().unwrap(), recording.to_str().unwrap());
    let recorded = crate::cli::dvm(&[
        "run",
        "--json",
        "--allow-net",
        &allow,
        "--net-record",
        recording_arg,
        script,
    ]);
    let json = crate::cli::json(&recorded);
    assert_eq!(json["stdout"], "hello\nPOST x\n", "{}", show(&recorded));
    let written: dvm::NetRecording =
        serde_json::from_slice(&std::fs::read(&recording).unwrap()).unwrap();
    assert_eq!(written.exchanges.len(), 2);
    assert_eq!(written.exchanges[1].status, 201);
    assert_eq!(server.paths().len(), 2);
    // Replayed: no request reaches the server; deterministic, so cached the second time.
    let replay = [
        "run",
        "--json",
        "--seed",
        "7",
        "--allow-net",
        &allow,
        "--net-replay",
        recording_arg,
        script,
    ];
    for expected_cache in ["miss", "hit"] {
        let replayed = crate::cli::dvm(&replay);
        let json = crate::cli::json(&replayed);
        assert_eq!(json["stdout"], "hello\nPOST x\n", "{}", show(&replayed));
        assert_eq!(json["cache"], expected_cache, "{}", show(&replayed));
    }
    assert_eq!(server.paths().len(), 2, "a replay sent requests");
    // A request the recording does not have is refused, not sent.
    let other = dir.path().join("other.py");
    std::fs::write(
        &other,
        format!(
            "import urllib.request\ntry:\n    urllib.request.urlopen('{}')\nexcept OSError as e:\n    print(e.reason)",
            server.url("/hello?again")
        ),
    )
    .unwrap();
    let refused = crate::cli::dvm(&[
        "run",
        "--json",
        "--allow-net",
        &allow,
        "--net-replay",
        recording_arg,
        other.to_str().unwrap(),
    ]);
    let json = crate::cli::json(&refused);
    assert!(
        json["stdout"]
            .as_str()
            .unwrap()
            .contains("is not in the recorded exchanges"),
        "{}",
        show(&refused)
    );
    assert_eq!(server.paths().len(), 2);
    // Without a replay a deterministic run refuses the network; a broken recording is an
    // error that says so.
    let refused = crate::cli::dvm(&["run", "--seed", "1", "--allow-net", &allow, script]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot use the network"));
    std::fs::write(&recording, b"{\"exchanges\": [{\"url\": 5}]}").unwrap();
    let broken = crate::cli::dvm(&replay);
    assert_ne!(broken.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("is not a recording of HTTP exchanges"),
        "{}",
        show(&broken)
    );
}

#[test]
fn fetch_drops_credentials_on_a_redirect_to_another_origin() {
    let (first, second) = (Server::start(), Server::start());
    let policy = NetPolicy::parse([
        format!("127.0.0.1:{}", first.port),
        format!("127.0.0.1:{}", second.port),
    ])
    .unwrap();
    let input = RunInput {
        net: Some(Arc::new(policy)),
        ..RunInput::default()
    };
    let js = format!(
        "const r = await fetch('{}', {{ headers: {{ Authorization: 'Bearer s3cret', 'X-Keep': '1' }} }});\n\
         console.log(r.status, r.redirected, await r.text());",
        first.url(&format!("/to/{}/hello", second.port))
    );
    let outcome = script("javascript", "main.mjs", &js, &input);
    assert_eq!(
        stdout(&outcome),
        "200 true hello\n",
        "{}",
        describe(&outcome)
    );
    let header = |server: &Server, name: &str| {
        let seen = server.seen.lock().unwrap();
        seen[0]
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(
        header(&first, "authorization").as_deref(),
        Some("Bearer s3cret")
    );
    assert_eq!(
        header(&second, "authorization"),
        None,
        "the token went to another origin"
    );
    assert_eq!(header(&second, "x-keep").as_deref(), Some("1"));
}

#[test]
fn a_guest_looping_past_the_budget_or_flooding_headers_is_bounded() {
    let server = Server::start();
    let input = server.allowing(|policy| policy.max_requests = 3);
    let code = format!(
        r#"
import _dvm_net
long = "{hello}?" + "x" * 4000
errors = set()
for i in range(3000):
    try:
        _dvm_net.exchange("GET", long, [], b"")
    except OSError as e:
        errors.add(str(e)[:40])
print(len(errors))
"#,
        hello = server.url("/hello"),
    );
    let outcome = python(&code, &input);
    expect_status(&outcome, Status::Ok);
    // Three requests and one refusal are recorded, not three thousand.
    assert_eq!(outcome.net.len(), 4, "{:?}", outcome.net.len());
    assert!(
        outcome.net[3]
            .error
            .as_deref()
            .unwrap()
            .contains("made its 3 requests")
    );
    assert!(outcome.net.iter().all(|r| r.url.chars().count() <= 2048));
    assert_eq!(server.paths().len(), 3);
    // Thirty thousand header names: refused on the host, which does not panic.
    let code = format!(
        "import _dvm_net\ntry:\n    _dvm_net.exchange('GET', '{}', [(f'h{{i}}', 'v') for i in range(30000)], b'')\nexcept OSError as e:\n    print(e)",
        server.url("/hello")
    );
    let outcome = python(&code, &server.allowing(|_| {}));
    assert!(
        stdout(&outcome).contains("at most 100 request headers"),
        "{}",
        describe(&outcome)
    );
    assert_eq!(server.paths().len(), 3);
}
