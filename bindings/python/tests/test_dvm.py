"""The Python package against the real engine: runs, limits, files, errors, sessions, tools,
threads and asyncio. DVM_HOME should name a home with the runtimes installed (the test
suite's, `target/tmp/dvm-home-shared`); a fresh home installs them on first use."""

import asyncio
import contextlib
import json
import threading
import time

import pytest

import dvm


def test_a_run_returns_its_outcome():
    outcome = dvm.run("import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)")
    assert outcome.ok and outcome.status == "ok" and outcome.exit_code == 0
    assert outcome.stdout == "42\n" and outcome.stderr == "warn\n"
    assert outcome.stdout_bytes == b"42\n"
    assert outcome.limit is None and outcome.duration > 0
    assert json.loads(outcome.to_json())["stdout"] == "42\n"
    assert dvm.run("console.log([1, 2].map(x => x * 2).join(','))", "javascript").stdout == "2,4\n"


def test_limits_stop_runs_and_errors_are_outcomes():
    looped = dvm.run("while True: pass", limits=dvm.Limits(timeout=0.5))
    assert (looped.status, looped.limit) == ("limit", "deadline")
    bomb = dvm.run("x = bytearray(512 << 20)", limits=dvm.Limits(memory=64 << 20))
    assert bomb.status in ("limit", "error") and bomb.status != "ok"
    fuel = dvm.run("while True: pass", limits=dvm.Limits(fuel=10_000_000))
    assert fuel.limit == "fuel"
    failed = dvm.run("raise SystemExit(3)")
    assert (failed.status, failed.exit_code) == ("error", 3)
    with pytest.raises(ValueError):
        dvm.Limits(timeout=-1)


def test_files_in_and_out_stdin_args_env():
    outcome = dvm.run(
        "import os, sys\n"
        "data = open('in.txt').read()\n"
        "open('out/result.txt', 'w').write(data.upper() + sys.stdin.read() + sys.argv[1] + os.environ['K'])",
        files={"in.txt": "abc", "out/keep.bin": b"\x00\x01"},
        stdin="-in",
        args=["-arg"],
        env={"K": "-env"},
    )
    assert outcome.ok, outcome.stderr
    assert outcome.files == {"out/result.txt": b"ABC-in-arg-env"}


def test_errors_are_exceptions_named_by_kind():
    with pytest.raises(dvm.errors.UnknownRuntime) as raised:
        dvm.run("1", "cobol")
    assert raised.value.kind == "unknown_runtime"
    assert isinstance(raised.value, dvm.DvmError)
    with pytest.raises(dvm.DvmError) as raised:
        dvm.run("1", files={"../escape.txt": "x"})
    assert raised.value.kind == "invalid_input"


def test_a_deterministic_run_is_cached():
    code = f"import random, time\nprint(random.random(), time.time())  # {time.time()}"
    first = dvm.run(code, seed=5)
    second = dvm.run(code, seed=5)
    assert first.stdout == second.stdout
    assert (first.cache, second.cache) == ("miss", "hit")


def test_sessions_keep_state_snapshot_and_fork():
    with dvm.session() as session:
        session.run("x = 41")
        assert session.run("x + 1").stdout == "42\n"
        session.write_file("data.txt", "hello")
        assert session.run("open('data.txt').read()").stdout == "'hello'\n"
        session.run("open('made.txt', 'w').write('m')")
        assert session.read_file("made.txt") == b"m"
        forks = session.fork(2)
        for i, fork in enumerate(forks):
            fork.run(f"x += {i}")
        assert [f.run("x").stdout for f in forks] == ["41\n", "42\n"]
        snapshot = session.snapshot()
    assert not session.is_open
    with pytest.raises(dvm.errors.SessionClosed):
        session.run("x")
    resumed = dvm.default().resume(snapshot)
    assert resumed.run("x * 2").stdout == "82\n"
    resumed.close()


def test_python_callables_are_host_tools():
    seen = []

    def lookup(key: str, times: int = 1):
        """The length of key, times."""
        seen.append(key)
        return len(key) * times

    def broken():
        raise RuntimeError("no such record")

    outcome = dvm.run(
        "from dvm_tools import lookup, broken, ToolError\n"
        "print(sum(lookup(k) for k in ['a', 'bb']), lookup('ccc', times=2))\n"
        "try:\n    broken()\nexcept ToolError as e:\n    print('refused:', e)",
        tools=[lookup, {"function": broken, "name": "broken", "description": "Fails."}],
    )
    assert outcome.stdout == "3 6\nrefused: RuntimeError: no such record\n", outcome.stderr
    assert seen == ["a", "bb", "ccc"]
    assert [c["name"] for c in outcome.tool_calls] == ["lookup", "lookup", "lookup", "broken"]


def test_no_network_unless_hosts_are_allowed():
    outcome = dvm.run("import urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:9/')\n"
                      "except Exception as e:\n    print('refused')")
    assert outcome.stdout == "refused\n" and outcome.net == []
    js = dvm.run("try { await fetch('http://127.0.0.1:9/'); } catch (e) { console.log(e.message); }",
                 "javascript")
    assert "no network" in js.stdout
    with pytest.raises(dvm.DvmError):
        dvm.run("1", allow_net=["http://bad"])


def test_threads_run_sandboxes_at_once():
    results = {}

    def work(i):
        results[i] = dvm.run(f"print({i} * 2)").stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i * 2}\n" for i in range(8)}

    # The GIL is released while a guest runs: Python code goes on meanwhile.
    with ticking() as ticks:
        dvm.run("import time\ntime.sleep(0.5)")
    assert len(ticks) > 20


@contextlib.contextmanager
def ticking():
    """A thread that ticks every 5 ms while the block runs: the list of its ticks."""
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        yield ticks
    finally:
        stop.set()
        ticker.join()


def test_asyncio_runs_concurrently():
    async def main():
        outcomes = await asyncio.gather(*(dvm.arun(f"print({i})") for i in range(4)))
        return [o.stdout for o in outcomes]

    assert asyncio.run(main()) == ["0\n", "1\n", "2\n", "3\n"]


def test_requirements_are_installed_and_display_comes_back():
    outcome = dvm.run("import humanize\nprint(humanize.intcomma(1234567))",
                      requirements=["humanize"])
    assert outcome.stdout == "1,234,567\n", outcome.stderr
    shown = dvm.run("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                    "plt.plot([1, 2], [2, 1])\nplt.show()")
    assert shown.ok, shown.stderr
    png = shown.display[0]["data"]["image/png"]
    import base64
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_values_set_after_construction_and_mappings():
    limits = dvm.Limits()
    for bad in (float("nan"), -1.0, float("inf"), 1e300):
        limits.timeout = bad
        with pytest.raises(ValueError):
            dvm.run("1", limits=limits)
    from types import MappingProxyType

    outcome = dvm.run(
        "import os\nprint(open('a.txt').read(), os.environ['K'])",
        files=MappingProxyType({"a.txt": "x"}),
        env=MappingProxyType({"K": "v"}),
    )
    assert outcome.stdout == "x v\n", outcome.stderr
    with dvm.session() as session:
        with pytest.raises(dvm.errors.InvalidInput):
            session.fork(65)


def test_a_cancel_stops_a_run_and_a_cancelled_task_stops_its_sandbox():
    cancel = dvm.Cancel()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    outcome = dvm.run("while True: pass", limits=dvm.Limits(timeout=60), cancel=cancel)
    assert outcome.status == "limit" and outcome.limit == "cancelled", outcome
    assert time.monotonic() - started < 30

    async def main():
        task = asyncio.ensure_future(
            dvm.arun("while True: pass", limits=dvm.Limits(timeout=60)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())  # returns when the worker thread does: the sandbox stopped
    assert time.monotonic() - started < 30


def test_closing_a_session_lets_other_threads_run():
    session = dvm.session()
    session.run("import atexit, time\natexit.register(lambda: time.sleep(1))\nNone")
    with ticking() as ticks:
        time.sleep(0.05)
        before = len(ticks)
        session.close()  # waits for the guest's atexit sleep, without the GIL
        during = len(ticks) - before
    assert not session.is_open
    assert during > 20, during
