"""Token ids in, text pieces out, as :func:`lmforge.inference.stream_ids` cuts them: a
character split across tokens waits for its last byte, and a stop string ends the text just
before it (a tail that could start one is held back until it cannot)."""

from __future__ import annotations


class TextStream:
    """Incremental detokenizer for one request."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        """True once a stop string was found (the caller cancels the generation)."""

    def push(self, tok: int) -> str:
        """Add a token; the text that is now safe to send (maybe empty)."""
        if self.stopped:
            return ""
        self.ids.append(tok)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):
            return ""
        cut = min((i for s in self.stop if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(text[:cut])
        hold = max((len(s) - 1 for s in self.stop), default=0)
        return self._take(text[:len(text) - hold])

    def flush(self) -> str:
        """The rest of the text at the end of the generation."""
        if self.stopped or not self.ids:
            return ""
        return self._take(self.tokenizer.decode(self.ids, skip_special_tokens=False))

    def _take(self, upto: str) -> str:
        if len(upto) <= len(self.emitted):
            return ""
        piece = upto[len(self.emitted):]
        self.emitted = upto
        return piece
