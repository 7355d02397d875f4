"""Drives `dvm serve` with the official Judge0 Python SDK (judge0 0.0.8).

Usage: python judge0_client.py BASE_URL

Prints one JSON line with what it saw, or stops at the first failed check with a message
saying what was expected, what came back, and the submission as the SDK holds it.
"""

import json
import sys

import judge0

PYTHON = 71
JAVASCRIPT = 63


def check(condition, message, submission=None):
    if not condition:
        if submission is not None:
            message += f"\n  submission: {submission!r}"
        raise AssertionError(message)


def expect(submission, status, stdout=None):
    check(
        submission.status == status,
        f"expected status {status!s}, got {submission.status!s}",
        submission,
    )
    if stdout is not None:
        check(
            submission.stdout == stdout,
            f"expected stdout {stdout!r}, got {submission.stdout!r}",
            submission,
        )


def main():
    base = sys.argv[1]
    # The SDK polls forever by default; bound it so a stuck submission fails the test.
    client = judge0.Client(base, retry_strategy=judge0.MaxWaitTime(120))
    requests = []
    client.client.event_hooks["request"].append(
        lambda request: requests.append(f"{request.method} {request.url.path}")
    )
    results = {"languages": sorted(language.id for language in client.languages)}
    check(
        {PYTHON, JAVASCRIPT} <= set(results["languages"]),
        f"/languages lacks 71 or 63: {results['languages']}",
    )
    check(
        client.config.max_submission_batch_size > 1,
        f"batches are off: {client.config!r}",
    )

    python = judge0.run(client=client, source_code="print(6 * 7)", language=PYTHON)
    expect(python, judge0.Status.ACCEPTED, "42\n")
    check(python.token is not None and python.finished_at is not None, "no token or finish time", python)
    check(python.time is not None and python.time >= 0, "no run time", python)
    results["python"] = str(python.status)

    javascript = judge0.run(
        client=client,
        source_code="console.log([1, 2, 3].map((n) => n * 2).join(','));",
        language=JAVASCRIPT,
    )
    expect(javascript, judge0.Status.ACCEPTED, "2,4,6\n")
    results["javascript"] = str(javascript.status)

    # A language alias makes the SDK read /about's version to pick the id.
    alias = judge0.run(client=client, source_code="print('alias')", language=judge0.PYTHON)
    expect(alias, judge0.Status.ACCEPTED, "alias\n")

    echo = judge0.run(
        client=client,
        source_code="import sys\nprint(sys.stdin.read().strip().upper())",
        language=PYTHON,
        stdin="hello judge0\n",
        expected_output="HELLO JUDGE0",
    )
    expect(echo, judge0.Status.ACCEPTED, "HELLO JUDGE0\n")

    wrong = judge0.run(
        client=client,
        source_code="print(2 + 2)",
        language=PYTHON,
        expected_output="5\n",
    )
    expect(wrong, judge0.Status.WRONG_ANSWER, "4\n")
    results["wrong_answer"] = str(wrong.status)

    endless = judge0.run(
        client=client,
        source_code="while True:\n    pass\n",
        language=PYTHON,
        cpu_time_limit=1,
    )
    expect(endless, judge0.Status.TIME_LIMIT_EXCEEDED)
    results["time_limit"] = str(endless.status)

    crash = judge0.run(
        client=client,
        source_code="print('before')\nraise ValueError('boom')\n",
        language=PYTHON,
    )
    expect(crash, judge0.Status.RUNTIME_ERROR_NZEC, "before\n")
    check(crash.status.value == 11, f"NZEC is not id 11: {crash.status.value}", crash)
    check(crash.exit_code == 1, f"expected exit code 1, got {crash.exit_code}", crash)
    check(
        crash.stderr is not None and "ValueError: boom" in crash.stderr,
        "the traceback is not on stderr",
        crash,
    )
    js_crash = judge0.run(
        client=client,
        source_code="throw new Error('js boom');",
        language=JAVASCRIPT,
    )
    expect(js_crash, judge0.Status.RUNTIME_ERROR_NZEC)
    results["runtime_error"] = crash.status.value

    # Arguments split on whitespace; stderr folded into stdout when asked.
    folded = judge0.run(
        client=client,
        source_code="import sys\nprint(sys.argv[1:], flush=True)\nprint('to stderr', file=sys.stderr)",
        language=PYTHON,
        command_line_arguments="alpha  beta",
        redirect_stderr_to_stdout=True,
    )
    expect(folded, judge0.Status.ACCEPTED, "['alpha', 'beta']\nto stderr\n")
    check(not folded.stderr, f"stderr was not folded into stdout: {folded.stderr!r}", folded)

    # Created without waiting, then waited for: a mixed list of submissions.
    pending = judge0.async_run(
        client=client,
        submissions=[
            judge0.Submission(source_code="print('py')", language=PYTHON),
            judge0.Submission(source_code="console.log('js')", language=judge0.JAVASCRIPT),
        ],
    )
    check(all(s.token is not None for s in pending), f"async_run gave no tokens: {pending!r}")
    finished = judge0.wait(client=client, submissions=pending)
    check(
        [(s.status, s.stdout) for s in finished]
        == [(judge0.Status.ACCEPTED, "py\n"), (judge0.Status.ACCEPTED, "js\n")],
        f"async_run + wait: {[(str(s.status), s.stdout) for s in finished]}",
    )

    # Several test cases: one submission per case, created and polled through the batch
    # endpoints, results in the order of the cases.
    before = len(requests)
    cases = [("1 2\n", "3\n"), ("10 20\n", "30\n"), ("5 5\n", "11\n"), ("-4 4\n", "0")]
    graded = judge0.run(
        client=client,
        source_code="a, b = map(int, input().split())\nprint(a + b)",
        language=PYTHON,
        test_cases=cases,
    )
    check(isinstance(graded, list) and len(graded) == len(cases), f"expected {len(cases)} results, got {graded!r}")
    statuses = [str(s.status) for s in graded]
    check(
        statuses == ["Accepted", "Accepted", "Wrong Answer", "Accepted"],
        f"test case statuses: {statuses}",
    )
    check(
        [s.stdout for s in graded] == ["3\n", "30\n", "10\n", "0\n"],
        f"test case stdouts: {[s.stdout for s in graded]}",
    )
    check(
        len({s.token for s in graded}) == len(cases),
        f"test cases share tokens: {[s.token for s in graded]}",
    )
    batch_calls = requests[before:]
    check("POST /submissions/batch" in batch_calls, f"no batch create: {batch_calls}")
    check("GET /submissions/batch" in batch_calls, f"no batch poll: {batch_calls}")
    check("POST /submissions" not in batch_calls, f"a case went alone: {batch_calls}")
    results["test_cases"] = statuses

    # Non-ASCII text survives base64 both ways: source, stdin, stdout, expected output.
    text = "héllo wörld ✓ 日本語 🚀"
    unicode = judge0.run(
        client=client,
        source_code="import sys\nline = sys.stdin.read()\nprint(line.strip() + ' → ok')\nprint('ß' * 3)",
        language=PYTHON,
        stdin=text + "\n",
        expected_output=f"{text} → ok\nßßß\n",
    )
    expect(unicode, judge0.Status.ACCEPTED, f"{text} → ok\nßßß\n")
    check(unicode.stdin == text + "\n", f"stdin came back as {unicode.stdin!r}", unicode)
    js_unicode = judge0.run(
        client=client,
        source_code="console.log('naïve café ' + String.fromCodePoint(0x1F600));",
        language=JAVASCRIPT,
    )
    expect(js_unicode, judge0.Status.ACCEPTED, "naïve café 😀\n")
    results["unicode"] = unicode.stdout

    results["requests"] = len(requests)
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
