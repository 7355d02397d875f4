"""dvm for agent frameworks: `dvm.integrations.smolagents` (a CodeAgent executor) and
`dvm.integrations.langchain` (a tool). Each imports its framework only when imported."""
