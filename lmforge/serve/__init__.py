"""The OpenAI-compatible HTTP server (``lmforge serve``): batched decoding, the web page."""
