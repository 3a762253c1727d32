"""Load test of `lmforge serve` (continuous batching) against a naive one-request-at-a-time
server over transformers' ``generate``, on loopback.

For 1, 2, 4, 8, 16 concurrent clients (asyncio + httpx), each sending ``--requests`` streamed
completions: time to first token and inter-token latency (p50/p99), aggregate generated
tokens/s, errors, and the server's peak resident memory (VmHWM). The naive server is written
here (``--naive-server``): it loads the model exported to Hugging Face format
(`lmforge export --format hf`) and streams ``model.generate`` through a streamer, one request
at a time under a lock.

Soak mode (``--soak SECONDS``): clients run for that long, a share of them (``--disconnect``)
dropping the connection mid-stream; the report gives resident memory over time and the
running slots left at the end (leaked slots: should be 0).

    python bench/serve_load.py --model runs/smollm2 --clients 1,2,4,8,16 --requests 4
    python bench/serve_load.py --tiny --clients 1,4 --requests 2 --max-tokens 16   # smoke test
    python bench/serve_load.py --tiny --soak 20 --disconnect 0.3
"""


import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = ["The history of the printing press", "Write a short poem about the sea.",
           "Explain what a neural network is.", "List three fruits:", "Once upon a time",
           "The capital of France is", "def fibonacci(n):", "Tips for a good night's sleep:"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int, key: str = "VmHWM") -> float:
    """A process's peak (VmHWM) or current (VmRSS) resident memory in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("server did not start in 120 s")


async def one_request(client, url: str, model: str, max_tokens: int, rng: random.Random,
                      drop_after: int | None = None) -> dict:
    """One streamed completion: arrival time of every chunk (and whether it failed)."""
    body = {"model": model, "prompt": rng.choice(PROMPTS), "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    t0, times = time.perf_counter(), []
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": r.status_code, "times": []}
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if json.loads(line[6:])["choices"][0]["text"]:
                        times.append(time.perf_counter() - t0)
                    if drop_after is not None and len(times) >= drop_after:
                        return {"error": None, "times": times, "dropped": True}
    except Exception as e:  # noqa: BLE001 - counted, not fatal
        return {"error": type(e).__name__, "times": times}
    return {"error": None, "times": times}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    rng = random.Random(0)
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker():
            return [await one_request(client, url, model, max_tokens, rng)
                    for _ in range(requests)]
        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*[worker() for _ in range(clients)])
                   for r in rs]
        wall = time.perf_counter() - t0
    ttft = [r["times"][0] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    tokens = sum(len(r["times"]) for r in results)
    return {"clients": clients, "requests": len(results),
            "errors": sum(r["error"] is not None for r in results),
            "ttft_p50_ms": 1e3 * pct(ttft, 50), "ttft_p99_ms": 1e3 * pct(ttft, 99),
            "itl_p50_ms": 1e3 * pct(itl, 50), "itl_p99_ms": 1e3 * pct(itl, 99),
            "tokens_per_s": tokens / wall, "wall_s": wall}


async def soak(url: str, model: str, seconds: float, clients: int, max_tokens: int,
               disconnect: float, pid: int) -> dict:
    import httpx

    rng, memory, stop = random.Random(0), [], time.monotonic() + seconds
    counts = {"done": 0, "dropped": 0, "errors": 0}
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker():
            while time.monotonic() < stop:
                drop = rng.randint(1, 8) if rng.random() < disconnect else None
                r = await one_request(client, url, model, max_tokens, rng, drop)
                key = "errors" if r["error"] else "dropped" if r.get("dropped") else "done"
                counts[key] += 1

        async def sample():
            t0 = time.monotonic()
            while time.monotonic() < stop:
                memory.append((round(time.monotonic() - t0, 1), round(peak_rss_mb(pid, "VmRSS"))))
                await asyncio.sleep(max(1.0, seconds / 20))
        await asyncio.gather(sample(), *[worker() for _ in range(clients)])
        await asyncio.sleep(1.0)  # let the engine notice the last disconnects
        text = (await client.get(url + "/metrics")).text
    slots = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                if l.startswith("lmforge_running_slots{"))
    return counts | {"rss_mib_over_time": memory, "leaked_slots": slots}


# -- the naive baseline server ------------------------------------------------------------
def naive_server(hf_dir: str, port: int) -> None:
    """One request at a time: transformers' generate, streamed token by token (SSE)."""
    import torch
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(Path(hf_dir) / "tokenizer.json"))
    lock = threading.Lock()
    app = FastAPI()

    class Pieces(BaseStreamer):
        def __init__(self, loop, q):
            self.loop, self.q, self.first = loop, q, True

        def put(self, value):
            if self.first:  # generate() hands over the prompt first
                self.first = False
                return
            self.loop.call_soon_threadsafe(self.q.put_nowait, int(value.reshape(-1)[0]))

        def end(self):
            self.loop.call_soon_threadsafe(self.q.put_nowait, None)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        ids = torch.tensor([tok.encode(body["prompt"]).ids])
        loop, q = asyncio.get_running_loop(), asyncio.Queue()

        def run():
            with lock, torch.no_grad():
                model.generate(ids, max_new_tokens=body["max_tokens"], do_sample=False,
                               streamer=Pieces(loop, q), pad_token_id=0)
        threading.Thread(target=run, daemon=True).start()

        async def sse():
            while (t := await q.get()) is not None:
                chunk = {"choices": [{"text": tok.decode([t]) or " "}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(sse(), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def tiny_model_dir(out: Path) -> Path:
    """A small random Llama-style decoder with a byte-level tokenizer, for smoke tests."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from lmforge.modeldir import save_model_dir
    from lmforge.models import ModelConfig, build_model

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), \
        decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=64, n_layer=2, n_head=4,
                      context_length=256, positional="rope", norm="rmsnorm",
                      activation="swiglu")
    return save_model_dir(out, build_model(cfg), tok)


def run_server_bench(args, model_dir: Path, cmd: list[str], label: str) -> list[dict]:
    port = free_port()
    proc = start(cmd + ["--port", str(port)], port)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}"
        if args.soak:
            r = asyncio.run(soak(url, model_dir.name, args.soak, max(args.clients), args.max_tokens,
                                 args.disconnect, proc.pid))
            rows.append({"server": label} | r)
        else:
            for c in args.clients:
                r = asyncio.run(load(url, model_dir.name, c, args.requests, args.max_tokens))
                rows.append({"server": label} | r | {"peak_rss_mib": round(peak_rss_mb(proc.pid))})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a decoder model directory (e.g. SmolLM2 imported)")
    p.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    p.add_argument("--clients", default="1,2,4,8,16")
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--no-naive", action="store_true", help="skip the transformers baseline")
    p.add_argument("--soak", type=float, default=0, help="soak for this many seconds instead")
    p.add_argument("--disconnect", type=float, default=0.3, help="soak: share of requests "
                   "that drop the connection mid-stream")
    p.add_argument("--naive-server", metavar="HF_DIR", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.naive_server:
        return naive_server(args.naive_server, args.port)
    args.clients = [int(c) for c in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    model_dir = tiny_model_dir(tmp / "tiny") if args.tiny else Path(args.model)
    if not (args.tiny or args.model):
        raise SystemExit("give --model DIR or --tiny")
    py = [sys.executable]
    rows = run_server_bench(args, model_dir, py + ["-m", "lmforge", "serve", str(model_dir),
                                                   "--max-batch", str(args.max_batch),
                                                   "--max-queue", "1024"], "lmforge")
    if not args.no_naive and not args.soak:
        hf = tmp / "hf"
        subprocess.run(py + ["-m", "lmforge", "export", str(model_dir), "--format", "hf",
                             "--out", str(hf)], check=True, stdout=subprocess.DEVNULL)
        rows += run_server_bench(args, model_dir, py + [__file__, "--naive-server", str(hf)],
                                 "naive-transformers")
    if args.soak:
        print(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
