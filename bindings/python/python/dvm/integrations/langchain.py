"""LangChain: a tool (`langchain_core.tools.BaseTool`) that runs code in a fresh dvm sandbox.

    from dvm.integrations.langchain import DvmCodeTool
    tool = DvmCodeTool()                  # or DvmCodeTool(runtime="javascript", timeout=5)
    tool.invoke({"code": "print(6 * 7)"}) # '{"status": "ok", "stdout": "42\\n", ...}'
"""

import json
from typing import Optional

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

import dvm


class DvmCodeInput(BaseModel):
    code: str = Field(description="The program's source code.")
    stdin: Optional[str] = Field(default=None, description="Text it reads on stdin.")


class DvmCodeTool(BaseTool):
    """Runs a program in a WebAssembly sandbox (no network, hard limits) and returns its
    status, exit code, stdout, stderr and the limit that stopped it, as JSON."""

    name: str = "run_code"
    description: str = (
        "Run a program in a fresh sandbox (no network, hard time and memory limits) and get "
        "its status, exit code, stdout and stderr as JSON. Python has numpy and pandas.")
    args_schema: type[BaseModel] = DvmCodeInput
    runtime: str = "python"
    timeout: float = 10.0
    memory: Optional[int] = None

    def _limits(self):
        return dvm.Limits(timeout=self.timeout, memory=self.memory)

    @staticmethod
    def _summary(outcome):
        return json.dumps({"status": outcome.status, "exit_code": outcome.exit_code,
                           "stdout": outcome.stdout, "stderr": outcome.stderr,
                           "limit": outcome.limit})

    def _run(self, code: str, stdin: Optional[str] = None, run_manager=None) -> str:
        return self._summary(dvm.run(code, self.runtime, stdin=stdin, limits=self._limits()))

    async def _arun(self, code: str, stdin: Optional[str] = None, run_manager=None) -> str:
        outcome = await dvm.arun(code, self.runtime, stdin=stdin, limits=self._limits())
        return self._summary(outcome)
