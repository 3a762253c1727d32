"""``lmforge serve``: an OpenAI-compatible HTTP server over model directories, with continuous
batching (:mod:`.engine`) and a web page (``static/``). See docs/serve.md."""

from .app import create_app
from .engine import Engine, QueueFull, Request
from .protocol import BadRequest, Limits
from .registry import ServedModel, load_all, load_served

__all__ = ["BadRequest", "Engine", "Limits", "QueueFull", "Request", "ServedModel", "create_app",
           "load_all", "load_served"]
