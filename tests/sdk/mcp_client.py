"""Drives dvm's MCP server with the official MCP Python SDK (mcp 2.3.0, v2 API).

Usage:
  python mcp_client.py stdio DVM_BINARY DVM_HOME   launches `DVM_BINARY mcp`
  python mcp_client.py http BASE_URL               connects to BASE_URL/mcp of `dvm serve`

Both initialize, list the tools and call every one of them. Prints one JSON line with what
it saw, or stops at the first failed check with a message naming the tool, what was
expected and what came back.
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "run_code",
    "install_packages",
    "write_file",
    "read_file",
    "list_files",
    "create_session",
    "run_in_session",
    "close_session",
    "snapshot_session",
    "restore_session",
    "fork_session",
    "list_runtimes",
}
# Bounds for one tool call and for the whole script; the first install may download.
CALL_SECONDS = 300
TOTAL_SECONDS = 900


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def show(result):
    return f"is_error={result.is_error} content={[getattr(c, 'text', c) for c in result.content]}"


async def call(session, name, arguments):
    """Calls a tool that should succeed; returns its text."""
    result = await session.call_tool(name, arguments)
    check(not result.is_error, f"{name}({arguments}) failed: {show(result)}")
    check(
        len(result.content) == 1 and result.content[0].type == "text",
        f"{name} did not answer with one text block: {show(result)}",
    )
    return result.content[0].text


async def call_json(session, name, arguments):
    text = await call(session, name, arguments)
    try:
        return json.loads(text)
    except ValueError as error:
        raise AssertionError(f"{name} did not answer with JSON ({error}): {text!r}") from None


async def run_ok(session, arguments, stdout, tool="run_code"):
    outcome = await call_json(session, tool, arguments)
    check(
        outcome.get("status") == "ok" and outcome.get("stdout") == stdout,
        f"{tool}({arguments}): expected status ok and stdout {stdout!r}, got {outcome}",
    )
    return outcome


async def exercise(session):
    results = {}
    init = await session.initialize()
    check(init.server_info.name == "dvm", f"server name: {init.server_info!r}")
    check(init.capabilities.tools is not None, f"no tools capability: {init.capabilities!r}")
    results["protocol"] = init.protocol_version

    tools = (await session.list_tools()).tools
    names = {tool.name for tool in tools}
    check(names == TOOLS, f"tools: missing {TOOLS - names}, unexpected {names - TOOLS}")
    for tool in tools:
        check(bool(tool.description and tool.description.strip()), f"{tool.name} has no description")
        schema = tool.input_schema
        check(
            isinstance(schema, dict) and schema.get("type") == "object",
            f"{tool.name} input schema is not an object schema: {schema!r}",
        )
    schemas = {tool.name: tool.input_schema for tool in tools}
    check(
        "code" in schemas["run_code"].get("required", []),
        f"run_code does not require code: {schemas['run_code']!r}",
    )
    check(
        {"session_id", "code"} <= set(schemas["run_in_session"].get("required", [])),
        f"run_in_session requirements: {schemas['run_in_session']!r}",
    )
    results["tools"] = sorted(names)

    await run_ok(session, {"code": "print(6 * 7)"}, "42\n")
    await run_ok(
        session,
        {"code": "console.log(['a', 'b'].join('+'))", "runtime": "javascript"},
        "a+b\n",
    )
    await run_ok(
        session,
        {"code": "import sys\nprint(sys.stdin.read().upper(), sys.argv[1:])", "stdin": "hi", "args": ["-v"]},
        "HI ['-v']\n",
    )
    failed = await call_json(session, "run_code", {"code": "raise SystemExit(3)"})
    check(
        failed.get("status") == "error" and failed.get("exit_code") == 3,
        f"run_code exit 3: {failed}",
    )

    # Files: upload, run code on them, read back what the code wrote, list.
    written = await call_json(session, "write_file", {"path": "data/numbers.txt", "content": "3\n4\n5\n"})
    check(written.get("path") == "data/numbers.txt", f"write_file answered {written}")
    await run_ok(
        session,
        {
            "code": "import os\n"
            "nums = [int(x) for x in open('data/numbers.txt')]\n"
            "os.makedirs('out', exist_ok=True)\n"
            "open('out/total.txt', 'w').write(f'total={sum(nums)}')\n"
            "print(len(nums))",
        },
        "3\n",
    )
    content = await call(session, "read_file", {"path": "out/total.txt"})
    check(content == "total=12", f"read_file out/total.txt: {content!r}")
    listed = await call_json(session, "list_files", {})
    paths = {entry.get("path"): entry for entry in listed}
    check(
        "data/numbers.txt" in paths and "out/total.txt" in paths,
        f"list_files lacks the written files: {listed}",
    )
    check(paths["data/numbers.txt"].get("size") == 6, f"size of data/numbers.txt: {paths['data/numbers.txt']}")
    check(
        not any(path.startswith("main") for path in paths),
        f"run_code left its script in the workspace: {listed}",
    )
    # A file of the model's own named main.py survives run_code.
    await call(session, "write_file", {"path": "main.py", "content": "# mine\n"})
    await run_ok(session, {"code": "print(open('main.py').read().strip())"}, "# mine\n")
    mine = await call(session, "read_file", {"path": "main.py"})
    check(mine == "# mine\n", f"run_code overwrote main.py: {mine!r}")
    missing = await session.call_tool("read_file", {"path": "no/such/file.txt"})
    check(missing.is_error, f"read_file of a missing file succeeded: {show(missing)}")
    results["files"] = sorted(path for path in paths)

    # Packages: installed for this connection, then importable.
    installed = await call_json(session, "install_packages", {"requirements": ["humanize"]})
    check(
        any(line.split()[0].lower() == "humanize" for line in installed.get("installed", [])),
        f"install_packages did not report humanize: {installed}",
    )
    await run_ok(session, {"code": "import humanize\nprint(humanize.intcomma(1234567))"}, "1,234,567\n")
    results["installed"] = installed["installed"]

    # Sessions: state carries over between calls until the session is closed.
    created = await call_json(session, "create_session", {})
    session_id = created.get("session_id")
    check(bool(session_id), f"create_session gave no session_id: {created}")
    await run_ok(session, {"session_id": session_id, "code": "x = 2"}, "", tool="run_in_session")
    second = await run_ok(session, {"session_id": session_id, "code": "x * 21"}, "42\n", tool="run_in_session")
    check(second.get("session_open") is True, f"session closed after a plain call: {second}")
    # Copies: a snapshot restored into a new session, and forks, go on from x == 2.
    snapshot = await call_json(session, "snapshot_session", {"session_id": session_id})
    snapshot_id = snapshot.get("snapshot_id")
    check(bool(snapshot_id), f"snapshot_session gave no snapshot_id: {snapshot}")
    restored = await call_json(session, "restore_session", {"snapshot_id": snapshot_id})
    await run_ok(session, {"session_id": restored.get("session_id"), "code": "x + 40"}, "42\n", tool="run_in_session")
    forked = await call_json(session, "fork_session", {"session_id": session_id, "count": 2})
    fork_ids = forked.get("session_ids") or []
    check(len(fork_ids) == 2, f"fork_session answered {forked}")
    for fork_id in fork_ids:
        await run_ok(session, {"session_id": fork_id, "code": "x * 3"}, "6\n", tool="run_in_session")
    closed = await call_json(session, "close_session", {"session_id": session_id})
    check(closed.get("closed") == session_id, f"close_session answered {closed}")
    after = await session.call_tool("run_in_session", {"session_id": session_id, "code": "x"})
    check(after.is_error, f"run_in_session after close_session succeeded: {show(after)}")
    results["closed_session_error"] = after.content[0].text if after.content else ""

    runtimes = await call_json(session, "list_runtimes", {})
    ids = {runtime.get("id"): runtime for runtime in runtimes}
    check({"python", "javascript"} <= set(ids), f"list_runtimes: {runtimes}")
    check(ids["python"].get("sessions") is True, f"python has no sessions: {ids['python']}")
    check(bool(ids["python"].get("version")), f"python has no version: {ids['python']}")
    results["runtimes"] = sorted(ids)
    return results


async def guarded(session):
    """The first failed check, returned rather than raised so that it is not buried in the
    transports' exception groups."""
    try:
        return await exercise(session)
    except AssertionError as failure:
        return failure


async def over_stdio(binary, home):
    server = StdioServerParameters(command=binary, args=["mcp"], env={"DVM_HOME": home})
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=CALL_SECONDS) as session:
            return await guarded(session)


async def over_http(base):
    async with streamable_http_client(f"{base}/mcp") as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=CALL_SECONDS) as session:
            return await guarded(session)


async def main(argv):
    with anyio.fail_after(TOTAL_SECONDS):
        if argv[1:2] == ["stdio"] and len(argv) == 4:
            results = await over_stdio(argv[2], argv[3])
        elif argv[1:2] == ["http"] and len(argv) == 3:
            results = await over_http(argv[2])
        else:
            raise SystemExit(__doc__)
    if isinstance(results, AssertionError):
        print(f"FAILED over {argv[1]}: {results}", file=sys.stderr)
        sys.exit(1)
    results["transport"] = argv[1]
    print(json.dumps(results))


if __name__ == "__main__":
    anyio.run(main, sys.argv)
