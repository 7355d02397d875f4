"""smolagents: a `PythonExecutor` whose code runs in a dvm session.

    from smolagents import CodeAgent
    from dvm.integrations.smolagents import DvmExecutor
    agent = CodeAgent(tools=[...], model=model, executor=DvmExecutor())

The agent's code runs in one python session (variables persist between steps) with hard
limits. Its tools stay on the host: the sandbox calls them through dvm's host-tool door, and
`final_answer(...)` ends the step with the answer, as in smolagents' own executors.
"""

import json

from smolagents.local_python_executor import CodeOutput, PythonExecutor

import dvm

# Run before each step: the tools as functions, and final_answer ending the step.
_PRELUDE = '''
import dvm_tools as _dvm_tools
class FinalAnswerException(BaseException):
    """Raised by final_answer: the step ends with the answer."""
def final_answer(answer):
    _dvm_tools.call("final_answer", {"answer": answer})
    raise FinalAnswerException()
for _dvm_name, _dvm_function in _dvm_tools.tools.items():
    if _dvm_name != "final_answer":
        globals()[_dvm_name] = _dvm_function
del _dvm_name, _dvm_function
'''

_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number",
               "boolean": "boolean", "array": "array", "object": "object"}


def _schema(inputs):
    properties, required = {}, []
    for name, spec in (inputs or {}).items():
        prop = {"description": spec.get("description", "")}
        if spec.get("type") in _JSON_TYPES:
            prop["type"] = _JSON_TYPES[spec["type"]]
        properties[name] = prop
        if not spec.get("nullable"):
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


class DvmExecutionError(Exception):
    """The agent's code failed in the sandbox; the message has its output and traceback."""


class DvmExecutor(PythonExecutor):
    """Runs a CodeAgent's code in a dvm session.

    Args:
        runtime: the dvm runtime (`python`: CPython with numpy and pandas).
        limits: `dvm.Limits` of each step (default: 30 s).
        engine: a `dvm.Dvm` (default: `dvm.default()`).
        requirements: packages installed for the session (pure-Python wheels).
    """

    def __init__(self, runtime="python", limits=None, engine=None, requirements=None):
        self.engine = engine or dvm.default()
        self.session = self.engine.session(runtime, requirements=requirements)
        self.limits = limits or dvm.Limits(timeout=30)
        self.tools = {}
        self._answer = None

    def send_tools(self, tools):
        self.tools = dict(tools)

    def send_variables(self, variables):
        if variables:
            payload = json.dumps(variables, default=str)
            self.session.run(f"globals().update(__import__('json').loads({payload!r}))",
                             limits=self.limits)

    def _host_tools(self):
        made = []
        for name, tool in self.tools.items():
            if name == "final_answer":
                continue
            made.append({
                "function": (lambda tool: lambda **kwargs: _jsonable(tool(**kwargs)))(tool),
                "name": name,
                "description": getattr(tool, "description", ""),
                "parameters": _schema(getattr(tool, "inputs", {})),
            })

        def final(answer):
            self._answer = (answer,)
            return None

        made.append({"function": final, "name": "final_answer",
                     "description": "Provides a final answer to the given problem.",
                     "parameters": {"type": "object", "properties": {"answer": {}},
                                    "required": ["answer"]}})
        return made

    def __call__(self, code_action):
        self._answer = None
        tools = self._host_tools()
        prelude = self.session.run(_PRELUDE, limits=self.limits, tools=tools)
        if not prelude.ok:
            raise DvmExecutionError(f"the sandbox could not be prepared:\n{prelude.stderr}")
        outcome = self.session.run(code_action, limits=self.limits, tools=tools)
        logs = outcome.stdout
        if self._answer is not None:
            return CodeOutput(output=self._answer[0], logs=logs, is_final_answer=True)
        if not outcome.ok:
            reason = f"a limit stopped it ({outcome.limit})" if outcome.limit else "an error"
            raise DvmExecutionError(
                f"{logs}\nExecuting code yielded {reason}:\n{outcome.stderr}")
        return CodeOutput(output=None, logs=logs, is_final_answer=False)

    def cleanup(self):
        self.session.close()
