//! Host tools: guest code calls the embedder's functions through the door, each call bounded
//! and recorded; what the tools see is checked on the host.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvm::{HostTool, HostTools, LimitKind, RunInput, SessionOptions, Status};
use serde_json::{Value, json};

use crate::support::*;

/// What a tool was called with, as the host saw it.
type Seen = Arc<Mutex<Vec<Value>>>;

fn search_tool(seen: &Seen) -> HostTool {
    let seen = seen.clone();
    HostTool::new(
        "search",
        "Finds the records whose title contains `query`.",
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "text to look for"},
                "limit": {"type": "integer"}
            },
            "required": ["query"]
        }),
        move |args: Value| {
            seen.lock().unwrap().push(args.clone());
            let query = args["query"].as_str().unwrap_or_default().to_string();
            let limit = args["limit"].as_u64().unwrap_or(10) as usize;
            let hits: Vec<Value> = ["alpha", "beta", "gamma", "delta"]
                .iter()
                .filter(|title| title.contains(&query))
                .take(limit)
                .map(|title| json!({"title": title}))
                .collect();
            Ok(Value::from(hits))
        },
    )
    .unwrap()
}

fn double_tool() -> HostTool {
    HostTool::new_async(
        "double",
        "Twice n.",
        json!({"type": "object", "properties": {"n": {"type": "number"}}}),
        |args: Value| async move {
            match args["n"].as_f64() {
                Some(n) => Ok(json!(n * 2.0)),
                None => Err("n must be a number".to_string()),
            }
        },
    )
    .unwrap()
}

/// Both tools above, the search tool recording into `seen`.
fn search_and_double(seen: &Seen) -> HostTools {
    HostTools::new()
        .with(search_tool(seen))
        .unwrap()
        .with(double_tool())
        .unwrap()
}

fn with_tools(tools: HostTools) -> RunInput {
    RunInput {
        tools: Some(Arc::new(tools)),
        ..RunInput::default()
    }
}

fn run(code: &str, input: &RunInput) -> dvm::Outcome {
    script("python", "main.py", code, input)
}

#[test]
fn a_program_calls_host_tools_in_a_loop_and_every_call_is_recorded() {
    let seen = Seen::default();
    let tools = search_and_double(&seen);
    let outcome = run(
        "import dvm_tools\nfrom dvm_tools import search, double\n\
         found = sum(len(search(q)) for q in ['a', 'e', 'ta'])\n\
         print(found, double(21), dvm_tools.call('double', {'n': 4}), search('a', limit=1))\n\
         print(search.__doc__.splitlines()[0], sorted(dvm_tools.tools))\n\
         for bad in [lambda: dvm_tools.call('nope'), lambda: double(n='x')]:\n\
         \x20   try:\n\
         \x20       bad()\n\
         \x20   except dvm_tools.ToolError as e:\n\
         \x20       print('refused:', e)\n\
         try:\n\
         \x20   search()\n\
         except TypeError as e:\n\
         \x20   print('TypeError:', e)\n",
        &with_tools(tools),
    );
    assert_eq!(outcome.status, Status::Ok, "{}", describe(&outcome));
    assert_eq!(
        stdout(&outcome),
        "8 42.0 8.0 [{'title': 'alpha'}]\n\
         Finds the records whose title contains `query`. ['double', 'search']\n\
         refused: there is no host tool named `nope`\n\
         refused: n must be a number\n\
         TypeError: search() missing required arguments: query\n"
    );
    // The host saw exactly the arguments the program passed.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            json!({"query": "a"}),
            json!({"query": "e"}),
            json!({"query": "ta"}),
            json!({"query": "a", "limit": 1})
        ]
    );
    let names: Vec<&str> = outcome.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "search", "search", "search", "double", "double", "search", "nope", "double"
        ]
    );
    assert!(outcome.tool_calls[..6].iter().all(|c| c.error.is_none()));
    assert!(
        outcome.tool_calls[6]
            .error
            .as_deref()
            .unwrap()
            .contains("no host tool")
    );
    assert_eq!(
        outcome.tool_calls[7].error.as_deref(),
        Some("n must be a number")
    );
    assert!(
        outcome
            .tool_calls
            .iter()
            .all(|c| c.request_bytes > 20 && c.response_bytes > 5)
    );
    let json = outcome.to_json();
    assert_eq!(json["tool_calls"][0]["name"], "search");
    assert!(json["tool_calls"][0]["ms"].is_number(), "{json}");
    assert!(json["tool_calls"][0]["error"].is_null());
}

#[test]
fn the_call_budget_stops_the_run_and_the_tool_is_not_called_past_it() {
    let seen = Seen::default();
    let mut tools = HostTools::new().with(search_tool(&seen)).unwrap();
    tools.max_calls = 5;
    let outcome = run(
        "from dvm_tools import search\nfor i in range(100):\n    search('a')\nprint('never')",
        &with_tools(tools),
    );
    expect_limit(&outcome, LimitKind::ToolCalls, "past the call budget");
    assert_eq!(outcome.tool_calls.len(), 5);
    assert_eq!(seen.lock().unwrap().len(), 5, "the host tool ran 5 times");
    assert_eq!(outcome.to_json()["limit"], "tool_calls");
}

#[test]
fn slow_large_and_oversized_calls_are_bounded() {
    let calls = Arc::new(Mutex::new(0usize));
    let counted = calls.clone();
    let slow = HostTool::new("slow", "Sleeps.", Value::Null, move |_| {
        *counted.lock().unwrap() += 1;
        std::thread::sleep(Duration::from_secs(20));
        Ok(Value::Null)
    })
    .unwrap()
    .with_timeout(Duration::from_millis(100));
    let big = HostTool::new("big", "A large answer.", Value::Null, |_| {
        Ok(Value::from("x".repeat(300_000)))
    })
    .unwrap();
    let mut tools = HostTools::new().with(slow).unwrap().with(big).unwrap();
    tools.max_request_bytes = 4096;
    tools.max_response_bytes = 100_000;
    let outcome = run(
        "import dvm_tools\n\
         for name, args in [('slow', {}), ('big', {}), ('slow', {'pad': 'y' * 10000})]:\n\
         \x20   try:\n\
         \x20       dvm_tools.call(name, args)\n\
         \x20   except dvm_tools.ToolError as e:\n\
         \x20       print(name, 'refused:', e)\n",
        &with_tools(tools),
    );
    assert_eq!(outcome.status, Status::Ok, "{}", describe(&outcome));
    let text = stdout(&outcome);
    assert!(
        text.contains("slow refused: the tool `slow` did not answer within 100 ms"),
        "{text}"
    );
    assert!(
        text.contains("big refused: the answer of `big` is"),
        "{text}"
    );
    assert!(
        text.contains("slow refused: the request is over the cap"),
        "{text}"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "the oversized request never reached the tool"
    );
    assert_eq!(
        outcome.tool_calls.len(),
        2,
        "a refused request is not a call"
    );

    // A tool that outlives the run's deadline: the run stops at the deadline, not the tool.
    let stuck = HostTool::new("stuck", "", Value::Null, |_| {
        std::thread::sleep(Duration::from_secs(30));
        Ok(Value::Null)
    })
    .unwrap();
    let mut input = with_tools(HostTools::new().with(stuck).unwrap());
    input.limits.deadline = Duration::from_millis(500);
    let started = Instant::now();
    let outcome = run("import dvm_tools\ndvm_tools.call('stuck')", &input);
    expect_limit(&outcome, LimitKind::Deadline, "a tool past the deadline");
    assert!(started.elapsed() < GENEROUS, "{:?}", started.elapsed());
}

#[test]
fn without_tools_the_door_stays_shut_and_other_guests_refuse_them() {
    let outcome = run(
        "try:\n    import dvm_tools\nexcept ImportError:\n    print('no module')\n\
         import _host\ntry:\n    _host.call(b'{\"v\":1,\"op\":\"call\",\"tool\":\"search\",\"args\":{}}')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         try:\n    _host.call(b'{\"v\":1,\"op\":\"list\"}')\nexcept ConnectionRefusedError:\n    print('refused')\n",
        &RunInput::default(),
    );
    assert_eq!(
        stdout(&outcome),
        "no module\nrefused\nrefused\n",
        "{}",
        describe(&outcome)
    );
    assert!(outcome.tool_calls.is_empty());

    // A guest with no door refuses tools with an error that says why.
    let tools = HostTools::new().with(double_tool()).unwrap();
    let error = runtime("python-lite")
        .run_script("main.py", b"print(1)", &with_tools(tools))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not import the `host.call` door"),
        "{error}"
    );

    // JavaScript without tools: the module cannot be imported, the door is shut.
    let outcome = runtime("javascript")
        .run_script(
            "main.mjs",
            b"try { await import('dvm:tools') } catch (e) { console.log(e.message) }",
            &RunInput::default(),
        )
        .unwrap();
    assert_eq!(
        stdout(&outcome),
        "no host tools are bound to this run\n",
        "{}",
        describe(&outcome)
    );
}

#[test]
fn javascript_calls_host_tools_through_dvm_tools() {
    let seen = Seen::default();
    let tools = search_and_double(&seen);
    let source = "import { search, double, call, tools, ToolError } from 'dvm:tools';\n\
        const found = ['a', 'e', 'ta'].map(q => search(q).length).reduce((a, b) => a + b);\n\
        console.log(found, double(21), call('double', { n: 4 }),\n\
                    JSON.stringify(search({ query: 'a', limit: 1 })));\n\
        try { call('nope') } catch (e) { console.log(e instanceof ToolError, e.message) }\n\
        try { search() } catch (e) { console.log(e.name, e.message) }\n\
        console.log(Object.keys(tools).sort().join(','), search.description);\n";
    let outcome = runtime("javascript")
        .run_script("main.mjs", source.as_bytes(), &with_tools(tools.clone()))
        .unwrap();
    assert_eq!(outcome.status, Status::Ok, "{}", describe(&outcome));
    assert_eq!(
        stdout(&outcome),
        "8 42 8 [{\"title\":\"alpha\"}]\n\
         true there is no host tool named `nope`\n\
         TypeError search() missing required arguments: query\n\
         double,search Finds the records whose title contains `query`.\n"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(outcome.tool_calls.len(), 7, "{:?}", outcome.tool_calls);

    // In a session: imported in one call, called in the next; a call without tools finds
    // the door shut.
    let session = runtime("javascript")
        .session(SessionOptions::default())
        .unwrap();
    let turn = session
        .run(
            "const { search } = await import('dvm:tools'); search('e').length",
            &with_tools(tools.clone()),
        )
        .unwrap();
    assert_eq!(stdout(&turn), "2\n", "{}", describe(&turn));
    let turn = session
        .run("search('ta').map(hit => hit.title)", &with_tools(tools))
        .unwrap();
    assert_eq!(
        stdout(&turn),
        "[ 'beta', 'delta' ]\n",
        "{}",
        describe(&turn)
    );
    let shut = session.run("search('a')", &RunInput::default()).unwrap();
    assert_eq!(shut.status, Status::Error);
    assert!(
        stderr(&shut).contains("no host tools are bound"),
        "{}",
        describe(&shut)
    );
}

#[test]
fn a_deterministic_run_with_tools_is_never_answered_from_the_cache() {
    let seen = Seen::default();
    let tools = HostTools::new().with(search_tool(&seen)).unwrap();
    let mut input = with_tools(tools);
    input.deterministic = Some(dvm::Determinism::default());
    for _ in 0..2 {
        let outcome = run(
            "from dvm_tools import search\nprint(len(search('a')))",
            &input,
        );
        assert_eq!(stdout(&outcome), "4\n", "{}", describe(&outcome));
        assert_eq!(outcome.cache, dvm::results::CacheStatus::Off);
    }
    assert_eq!(seen.lock().unwrap().len(), 2, "the tool answered both runs");
}

#[test]
fn a_session_turn_reaches_the_tools_it_is_given() {
    let seen = Seen::default();
    let tools = HostTools::new().with(search_tool(&seen)).unwrap();
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    let outcome = session
        .run(
            "from dvm_tools import search\nhits = search('e')\nlen(hits)",
            &with_tools(tools),
        )
        .unwrap();
    assert_eq!(stdout(&outcome), "2\n", "{}", describe(&outcome));
    assert_eq!(outcome.tool_calls.len(), 1);
    // The next turn has no tools: the door is shut again, the state goes on.
    let outcome = session
        .run(
            "try:\n    search('a')\nexcept ConnectionRefusedError:\n    print('shut')\nlen(hits)",
            &RunInput::default(),
        )
        .unwrap();
    assert_eq!(stdout(&outcome), "shut\n2\n", "{}", describe(&outcome));
    assert!(outcome.tool_calls.is_empty());
}
