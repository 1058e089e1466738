"""Models: the interface, `infer_model`, providers and scripted test doubles.

Providers are imported lazily so `import agentlab` stays fast and optional
dependencies (``openai``, ``xllamacpp``) are only needed when used.
"""

from __future__ import annotations

from typing import Any

from agentlab.errors import UserError
from agentlab.models.base import (
    Model,
    ModelResponse,
    ModelSettings,
    allow_model_requests,
    check_allow_model_requests,
    set_allow_model_requests,
)
from agentlab.models.fallback import FallbackModel
from agentlab.models.retry import RetryModel, RetryPolicy
from agentlab.models.router import RouterModel
from agentlab.models.scripted import FunctionModel, SchemaModel
from agentlab.models.wrapper import WrapperModel

__all__ = [
    "FallbackModel",
    "FunctionModel",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "RetryModel",
    "RetryPolicy",
    "RouterModel",
    "SchemaModel",
    "WrapperModel",
    "allow_model_requests",
    "check_allow_model_requests",
    "infer_model",
    "set_allow_model_requests",
]


def infer_model(model: Model | str, **kwargs: Any) -> Model:
    """Build a model from a string.

    * ``"openai:gpt-4.1-mini"`` - an OpenAI-compatible endpoint; the base URL and
      key come from `base_url`/`api_key` or ``OPENAI_BASE_URL``/``OPENAI_API_KEY``.
    * ``"openai:NAME@http://127.0.0.1:8000/v1"`` - the same with the base URL inline
      (vLLM, Ollama, llama.cpp servers, LiteLLM, ``agentlab serve-model``).
    * ``"local:smollm2"`` (or ``"local"``) - the bundled in-process local model.
    * ``"local:/path/to/model.gguf"`` - any chat model in a GGUF file, in process.
    * ``"scripted:schema"`` - :class:`SchemaModel`, a test double.

    Extra keyword arguments go to the provider's constructor.
    """
    if isinstance(model, Model):
        return model
    provider, _, name = model.partition(":")
    if provider == "openai":
        from agentlab.models.openai_compat import OpenAIModel

        if "@" in name:
            name, _, base_url = name.partition("@")
            kwargs.setdefault("base_url", base_url)
        if not name:
            raise UserError(f"Model string {model!r} has no model name; use 'openai:NAME'.")
        return OpenAIModel(name, **kwargs)
    if provider == "local":
        from agentlab.models.local import LocalModel

        return LocalModel(name or "smollm2", **kwargs)
    if provider == "scripted" and name in ("", "schema"):
        return SchemaModel(**kwargs)
    raise UserError(
        f"Unknown model {model!r}. Use 'openai:NAME', 'openai:NAME@BASE_URL', "
        "'local:smollm2', 'local:/path/to/model.gguf' or 'scripted:schema', or pass a "
        "Model instance."
    )
