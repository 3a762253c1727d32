"""The HTTP application (FastAPI): OpenAI-compatible routes over the served models, the web
page at ``/``, /health and /metrics. Bodies are read and checked by :mod:`.protocol`, so a bad
request is a 4xx with one line naming the field; an API key (when set) is required on every
route but ``/``, ``/static`` and ``/health``."""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from ..errors import LMForgeError
from ..explain.explorer import ablation_grid, explore
from ..inference.translate import DecodeConfig
from .metrics import Metrics
from .openai_routes import generation
from .protocol import BadRequest, Limits, get, parse_json, string_list
from .registry import ServedModel

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/health", "/static/")


def _model(models: dict[str, ServedModel], body: dict, need: str) -> ServedModel:
    """The model a request names (``model``; optional when one model is served)."""
    name = body.get("model")
    if name is None and len(models) == 1:
        name = next(iter(models))
    if not isinstance(name, str):
        raise BadRequest("'model' must be a string: one of " + ", ".join(models), param="model")
    if name not in models:
        raise BadRequest(f"model {name!r} is not served here; choose one of "
                         f"{', '.join(models)} (GET /v1/models)", 404, param="model")
    m = models[name]
    if need not in m.capabilities():
        raise BadRequest(f"model {name!r} ({m.kind}) cannot do {need}; it can do "
                         f"{', '.join(m.capabilities())}", param="model")
    return m


def create_app(models: dict[str, ServedModel], *, api_key: str | None = None,
               limits: Limits | None = None, cors_origins: list[str] | None = None) -> FastAPI:
    """The application serving ``models`` (name -> :class:`ServedModel`)."""
    limits = limits or Limits()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app):
        yield
        for m in models.values():  # graceful shutdown: running requests end, threads stop
            if m.engine is not None:
                m.engine.shutdown()

    app = FastAPI(title="lmforge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.models, app.state.limits, app.state.metrics = models, limits, metrics
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0, path = time.perf_counter(), request.url.path
        if api_key and path != "/" and not path.startswith(OPEN_PATHS) and \
                request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                response = _error(BadRequest("a valid API key is required: send the header "
                                             "'Authorization: Bearer KEY'", 401))
                metrics.observe(path, 401, time.perf_counter() - t0)
                return response
        response = await call_next(request)
        metrics.observe(path if path.startswith("/v1/") or path in ("/health", "/metrics")
                        else "other", response.status_code, time.perf_counter() - t0)
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        return _error(e)

    @app.exception_handler(LMForgeError)
    async def lmforge_error(request: Request, e: LMForgeError):
        return _error(BadRequest(str(e)))

    _add_routes(app, models, limits, metrics)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _error(e: BadRequest) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _body(request: Request, limits: Limits) -> dict:
    return parse_json(await request.body(), limits)


def _add_routes(app: FastAPI, models: dict[str, ServedModel], limits: Limits,
                metrics: Metrics) -> None:
    def disconnected():
        metrics.disconnects += 1

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(models), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "lmforge",
             "kind": m.kind, "capabilities": m.capabilities(), "context_length": m.context}
            for m in models.values()]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request, limits)
        return await generation(_model(models, body, "completions"), body, limits, False,
                                request, disconnected)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request, limits)
        return await generation(_model(models, body, "chat"), body, limits, True, request,
                                disconnected)

    _add_task_routes(app, models, limits)


def _add_task_routes(app: FastAPI, models: dict[str, ServedModel], limits: Limits) -> None:
    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _body(request, limits)
        m = _model(models, body, "embeddings")
        texts = string_list(body, "input", most=limits.max_inputs)
        fmt = get(body, "encoding_format", str, "float")
        if fmt not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be \"float\" or \"base64\"",
                             param="encoding_format")
        emb = await asyncio.to_thread(m.embed, texts)  # (N, C)
        n_tok = sum(len(m.encode(t)) for t in texts)
        as_json = (lambda row: row.tolist()) if fmt == "float" else \
            (lambda row: base64.b64encode(row.astype("<f4").tobytes()).decode())
        return {"object": "list", "model": m.name, "data": [
            {"object": "embedding", "index": i, "embedding": as_json(row)}
            for i, row in enumerate(emb)],
            "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}}

    @app.post("/v1/classify")
    async def classify(request: Request):
        body = await _body(request, limits)
        m = _model(models, body, "classify")
        texts = string_list(body, "input", most=limits.max_inputs)

        def run():
            with m.lock:
                return m.classifier.predict_proba(texts)  # (N, K)
        probs = await asyncio.to_thread(run)
        labels = m.classifier.labels
        return {"object": "list", "model": m.name, "data": [
            {"index": i, "label": labels[int(p.argmax())],
             "probabilities": {lab: float(x) for lab, x in zip(labels, p)}}
            for i, p in enumerate(probs)]}

    @app.post("/v1/translate")
    async def translate(request: Request):
        body = await _body(request, limits)
        m = _model(models, body, "translate")
        texts = string_list(body, "input", most=limits.max_inputs)
        cfg = DecodeConfig(beam_size=get(body, "beam_size", int, 1, lo=1, hi=16))

        def run():
            with m.lock:
                return m.translator.translate(texts, cfg)
        out = await asyncio.to_thread(run)
        return {"object": "list", "model": m.name,
                "data": [{"index": i, "translation": t} for i, t in enumerate(out)]}

    @app.post("/v1/explore")
    async def explore(request: Request):
        body = await _body(request, limits)
        m = _model(models, body, "explore")
        text = get(body, "input", str)
        if not text:
            raise BadRequest("'input' must be a non-empty string", param="input")
        if len(m.encode(text)) > min(m.context, 256):
            raise BadRequest("'input' is too long to explore: at most 256 tokens", param="input")
        return await asyncio.to_thread(_explore, m, text, get(body, "top_k", int, 5, lo=1, hi=20),
                                       get(body, "ablation", bool, False))


def _explore(m: ServedModel, text: str, top_k: int, ablation: bool = False) -> dict:
    with m.lock:
        data = explore(m.lm.model, m.lm.tokenizer, text, top_k=top_k)
        if ablation:  # every head switched off in turn: two forward passes per head
            data["ablation"] = ablation_grid(m.lm.model, m.lm.tokenizer, text)
        return data
