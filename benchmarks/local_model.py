"""Generation speed of the local model: agentlab against raw xllamacpp.

    python benchmarks/local_model.py [--model-path FILE.gguf] [--tokens 128]
                                     [--repeat 5] [--threads 1]

Both sides load the same GGUF (default: the bundled SmolLM2-135M-Instruct) with
the same threads and context size, and generate from the same chat turns at
temperature 0: agentlab through ``LocalModel.request`` (as a run's step does,
answer path, no tools), raw xllamacpp through ``Server.handle_chat_completions``
with the turns agentlab renders (``LocalModel.request_preview``). The two are
timed in turn, `--repeat` times, and the medians compared. Generated tokens/s =
completion tokens / wall time of the request (prompt processing included on both
sides). The last line (stdout) is JSON: ``agentlab_tokens_per_s``,
``raw_tokens_per_s`` and ``ratio`` (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see DEPENDENCY-FACTS: shared cores

from agentlab.messages import SystemMessage, UserMessage
from agentlab.models import ModelSettings, allow_model_requests
from agentlab.models.local import LocalModel, smollm2_path

N_CTX = 2048
MESSAGES = [
    SystemMessage(content="You are a helpful assistant who writes vivid short stories."),
    UserMessage(content="Write a story about a lighthouse keeper who befriends a storm."),
]


def raw_server(path: Path, threads: int):  # type: ignore[no-untyped-def]
    """A second, independent llama.cpp server on the same file."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = N_CTX
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1
    params.warmup = False
    params.api_keys = [os.urandom(16).hex()]
    return xllamacpp.Server(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    path = (args.model_path or smollm2_path()).resolve()
    model = LocalModel(model_path=path, threads=args.threads, n_ctx=N_CTX)
    settings = ModelSettings(max_tokens=args.tokens, temperature=0.0)
    turns = model.request_preview(MESSAGES)["turns"]
    server = raw_server(path, args.threads)
    request = {"messages": turns, "max_tokens": args.tokens, "temperature": 0.0}

    def ours() -> tuple[int, float]:
        t0 = time.perf_counter()
        with allow_model_requests(True):
            response = asyncio.run(model.request(MESSAGES, (), settings))
        return response.usage.output_tokens, time.perf_counter() - t0

    def raw() -> tuple[int, float]:
        t0 = time.perf_counter()
        result = server.handle_chat_completions(request)
        return result["usage"]["completion_tokens"], time.perf_counter() - t0

    ours(), raw()  # load and warm both
    rates: dict[str, list[float]] = {"agentlab": [], "raw": []}
    for i in range(args.repeat):
        for side, generate in (("agentlab", ours), ("raw", raw)):
            tokens, seconds = generate()
            rates[side].append(tokens / seconds)
            print(
                f"{i + 1}/{args.repeat} {side}: {tokens} tokens in {seconds:.3f} s", file=sys.stderr
            )
    agentlab, baseline = statistics.median(rates["agentlab"]), statistics.median(rates["raw"])
    print(
        f"{path.name}, {args.threads} thread(s): agentlab {agentlab:.1f} tokens/s, raw "
        f"xllamacpp {baseline:.1f} tokens/s ({agentlab / baseline:.2f}x)",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "model": path.name,
                "threads": args.threads,
                "max_tokens": args.tokens,
                "agentlab_tokens_per_s": round(agentlab, 1),
                "raw_tokens_per_s": round(baseline, 1),
                "ratio": round(agentlab / baseline, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
