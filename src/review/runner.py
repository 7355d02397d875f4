# dvm's pytest runner: runs the project's suite in the sandbox and appends one JSON line per
# finished test (and per collection error) to RESULTS, so a run cut short by a limit still
# reports the tests that finished. The host turns the lines into the report and JUnit XML.
import json
import os
import sys

RESULTS = "/workspace/.dvm-tests/results.jsonl"
sink = None


def open_sink():
    global sink
    os.chdir("/workspace")
    for extra in ("/workspace", "/workspace/src"):
        if os.path.isdir(extra) and extra not in sys.path:
            sys.path.insert(0, extra)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    sink = open(RESULTS, "w", encoding="utf-8")


def emit(record):
    sink.write(json.dumps(record) + "\n")
    sink.flush()


def crash_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    text = report.longreprtext
    return text.strip().splitlines()[-1] if text.strip() else ""


class Collector:
    def __init__(self):
        self.open = {}

    def pytest_collectreport(self, report):
        if report.failed:
            emit({
                "nodeid": report.nodeid or ".",
                "outcome": "error",
                "phase": "collect",
                "duration": 0.0,
                "message": crash_message(report),
                "traceback": report.longreprtext,
                "stdout": "",
                "stderr": "",
            })

    def pytest_runtest_logreport(self, report):
        record = self.open.setdefault(report.nodeid, {
            "nodeid": report.nodeid,
            "outcome": "passed",
            "phase": "call",
            "duration": 0.0,
            "message": "",
            "traceback": "",
            "stdout": "",
            "stderr": "",
        })
        record["duration"] += getattr(report, "duration", 0.0) or 0.0
        # Each phase's report carries the output captured so far.
        record["stdout"] = report.capstdout
        record["stderr"] = report.capstderr
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if report.passed:
                record["outcome"] = "xpassed" if xfail else "passed"
            elif report.skipped:
                record["outcome"] = "xfailed" if xfail else "skipped"
            else:
                record["outcome"] = "failed"
        elif report.failed and record["outcome"] in ("passed", "xpassed"):
            record["outcome"] = "error"
            record["phase"] = report.when
        elif report.skipped and report.when == "setup":
            record["outcome"] = "skipped"
            record["phase"] = "setup"
        if report.failed or (report.skipped and not record["message"]):
            record["message"] = crash_message(report)
            if report.failed:
                record["traceback"] = report.longreprtext
        if report.when == "teardown":
            emit(self.open.pop(report.nodeid))


if __name__ == "__main__":
    # Guarded: a project whose pytest settings collect every *.py must not run this again.
    open_sink()
    import pytest

    code = pytest.main(
        [
            "-p", "no:cacheprovider",
            "-p", "no:faulthandler",
            "--capture=sys",
            "--color=no",
            "-o", "log_file=/tmp/.dvm-pytest.log",
            *sys.argv[1:],
        ],
        plugins=[Collector()],
    )
    sink.close()
    sys.exit(int(code))
