"""Code mode with the official MCP Python SDK (mcp 2.3.0) as the client.

Usage:
  python mcp_code_mode.py DVM_BINARY DVM_HOME UPSTREAM_BINARY

Launches `DVM_BINARY mcp --mcp-upstream tracker=UPSTREAM_BINARY` (an issue tracker served
with rmcp), checks that run_code's description lists the tracker's tools, then runs one
Python and one JavaScript program that call them in a loop and print only an aggregate.
Prints one JSON line with what it saw.
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

CALL_SECONDS = 300

PYTHON = """
from dvm_tools.tracker import search_issues, get_issue, close_issue
import dvm_tools
bugs = search_issues("crash")
labels = {}
for found in bugs:
    issue = get_issue(found["number"])
    for label in issue["labels"]:
        labels[label] = labels.get(label, 0) + 1
try:
    get_issue(99)
except dvm_tools.ToolError as e:
    missing = str(e)
try:
    close_issue(number=1)
except dvm_tools.ToolError as e:
    refused = str(e)
print(json.dumps({"bugs": len(bugs), "labels": labels, "missing": missing, "refused": refused}))
"""

JAVASCRIPT = """
import { tracker } from 'dvm:tools';
const numbers = tracker.search_issues('crash', 2).map(issue => issue.number);
console.log(JSON.stringify({ numbers, title: tracker.get_issue(numbers[0]).title }));
"""


def check(condition, message):
    if not condition:
        raise AssertionError(message)


async def run(session, code, runtime):
    result = await session.call_tool("run_code", {"code": code, "runtime": runtime})
    text = result.content[0].text
    check(not result.is_error, f"run_code ({runtime}) failed: {text}")
    outcome = json.loads(text)
    check(outcome["status"] == "ok", f"run_code ({runtime}): {outcome}")
    return outcome


async def main(argv):
    binary, home, upstream = argv[1:4]
    server = StdioServerParameters(
        command=binary,
        args=["mcp", "--mcp-upstream", f"tracker={upstream}"],
        env={"DVM_HOME": home},
    )
    with anyio.fail_after(CALL_SECONDS * 3):
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                described = next(t for t in listed.tools if t.name == "run_code").description
                outcome = await run(session, "import json\n" + PYTHON, "python")
                aggregate = json.loads(outcome["stdout"])
                calls = [c["name"] for c in outcome.get("tool_calls", [])]
                js = await run(session, JAVASCRIPT, "javascript")
                plain = await run(session, "print(6 * 7)", "python")
    print(json.dumps({
        "described": described,
        "aggregate": aggregate,
        "calls": calls,
        "javascript": json.loads(js["stdout"]),
        "javascript_calls": len(js.get("tool_calls", [])),
        "plain_calls": len(plain.get("tool_calls", [])),
        "plain": plain["stdout"],
    }))


if __name__ == "__main__":
    anyio.run(main, sys.argv)
