"""The framework integrations with the real packages from the registry and no model: a
scripted model stands in for one where the framework needs it."""

import asyncio
import json

import pytest

smolagents = pytest.importorskip("smolagents")
langchain_core = pytest.importorskip("langchain_core")

from smolagents import CodeAgent, Tool  # noqa: E402
from smolagents.models import ChatMessage, MessageRole, Model  # noqa: E402

import dvm  # noqa: E402
from dvm.integrations.langchain import DvmCodeTool  # noqa: E402
from dvm.integrations.smolagents import DvmExecutionError, DvmExecutor  # noqa: E402


class Prices(Tool):
    name = "price_of"
    description = "The price of a fruit, in cents."
    inputs = {"fruit": {"type": "string", "description": "a fruit's name"}}
    output_type = "integer"

    def __init__(self):
        super().__init__()
        self.asked = []

    def forward(self, fruit):
        self.asked.append(fruit)
        return {"apple": 30, "pear": 45, "fig": 80}[fruit]


class ScriptedModel(Model):
    """Answers with the next reply of a script, whatever it is asked."""

    def __init__(self, replies):
        super().__init__(model_id="scripted")
        self.replies = list(replies)
        self.prompts = []

    def generate(self, messages, stop_sequences=None, response_format=None,
                 tools_to_call_from=None, **kwargs):
        self.prompts.append(messages)
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


def test_the_executor_runs_steps_in_one_session_with_host_tools():
    executor = DvmExecutor()
    prices = Prices()
    executor.send_tools({"price_of": prices})
    executor.send_variables({"basket": ["apple", "fig"]})
    step = executor("total = sum(price_of(f) for f in basket)\nprint('total', total)")
    assert (step.logs, step.is_final_answer) == ("total 110\n", False)
    final = executor("final_answer(total * 2)\nprint('not reached')")
    assert final.is_final_answer and final.output == 220
    assert "not reached" not in final.logs
    assert prices.asked == ["apple", "fig"]
    with pytest.raises(DvmExecutionError) as failed:
        executor("1 / 0")
    assert "ZeroDivisionError" in str(failed.value)
    with pytest.raises(DvmExecutionError) as stopped:
        DvmExecutor(limits=dvm.Limits(timeout=0.5))("while True: pass")
    assert "deadline" in str(stopped.value)
    executor.cleanup()


def test_a_code_agent_runs_end_to_end_with_a_scripted_model():
    prices = Prices()
    model = ScriptedModel([
        "Thought: I look up each price.\n<code>\n"
        "costs = {f: price_of(f) for f in ['apple', 'pear']}\nprint(costs)\n</code>",
        "Thought: Now the cheapest.\n<code>\nfinal_answer(min(costs, key=costs.get))\n</code>",
    ])
    agent = CodeAgent(tools=[prices], model=model, executor=DvmExecutor(), max_steps=4)
    answer = agent.run("Which fruit is cheapest, apple or pear?")
    assert answer == "apple"
    assert prices.asked == ["apple", "pear"]
    # The first step's print reached the model as an observation.
    assert any("{'apple': 30, 'pear': 45}" in str(m) for m in model.prompts[1])


def test_the_langchain_tool_runs_code_in_a_sandbox():
    tool = DvmCodeTool()
    assert isinstance(tool, langchain_core.tools.BaseTool)
    result = json.loads(tool.invoke({"code": "print(6 * 7)"}))
    assert (result["status"], result["stdout"]) == ("ok", "42\n")
    looped = json.loads(DvmCodeTool(timeout=0.5).invoke({"code": "while True: pass"}))
    assert looped["limit"] == "deadline"
    js = DvmCodeTool(runtime="javascript")
    result = json.loads(asyncio.run(js.ainvoke({"code": "console.log(typeof process)"})))
    assert (result["status"], result["stdout"]) == ("ok", "undefined\n")
    echoed = json.loads(tool.invoke({"code": "print(input())", "stdin": "hi"}))
    assert echoed["stdout"] == "hi\n"
