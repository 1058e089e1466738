"""HTTP serving: any agentlab model as an OpenAI-compatible API (``model_server``)."""
