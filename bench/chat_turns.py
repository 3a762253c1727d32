"""Time to first token in a chat, with the KV cache kept between turns (``ChatSession``'s
default, ``reuse_cache=True``) and without (every turn prefills the whole conversation):
SmolLM2-135M-Instruct (imported from its Q4_1 GGUF), float32, greedy, a short conversation.
Both sessions run turn by turn in the same process (interleaved, so noise hits both alike) and
must give the same replies.

    python bench/chat_turns.py [--turns 3] [--max-new-tokens 32] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import QUESTION, model_dir  # noqa: E402
from lmforge.inference import ChatSession, GenerationConfig  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402

MESSAGES = [QUESTION, "And what is it famous for?", "Name one museum there.",
            "How old is it?", "Thank you!"]


def first_piece(chat: ChatSession, text: str) -> tuple[float, str]:
    """(seconds to the first piece of the reply, the whole reply)."""
    t0 = time.perf_counter()
    stream = chat.send(text)
    pieces = [next(stream, "")]
    ttft = time.perf_counter() - t0
    pieces.extend(stream)
    return ttft, "".join(pieces)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=3, choices=range(1, len(MESSAGES) + 1))
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="conversations; the best is kept")
    ap.add_argument("--model-dir", help="imported SmolLM2 directory (default runs/smollm2)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model_dir(model_dir(args.model_dir))
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0)
    ChatSession.from_loaded(lm, gen=gen).ask("Hi")  # warm-up
    best = {(reuse, t): float("inf") for reuse in (True, False) for t in range(args.turns)}
    prompt, fed = [0] * args.turns, [0] * args.turns
    for _ in range(args.repeats):
        chats = {reuse: ChatSession.from_loaded(lm, gen=gen, reuse_cache=reuse)
                 for reuse in (True, False)}
        for t, text in enumerate(MESSAGES[:args.turns]):
            replies = {}
            for reuse, chat in chats.items():
                ttft, replies[reuse] = first_piece(chat, text)
                best[reuse, t] = min(best[reuse, t], ttft)
            if replies[True] != replies[False]:
                sys.exit(f"turn {t + 1}: the replies differ:\n{replies[True]!r}\n"
                         f"{replies[False]!r}")
            prompt[t], fed[t] = chats[True].cache.kept + chats[True].cache.fed, \
                chats[True].cache.fed
    rows = [[t + 1, prompt[t], fed[t], f"{best[False, t] * 1e3:.0f} ms",
             f"{best[True, t] * 1e3:.0f} ms", f"{best[False, t] / best[True, t]:.1f}x"]
            for t in range(args.turns)]
    print(f"SmolLM2-135M-Instruct (from the Q4_1 GGUF), float32, greedy, replies of at most "
          f"{args.max_new_tokens} tokens (identical with and without reuse), time to the first "
          f"piece of each reply, best of {args.repeats}")
    print(machine())
    print(table(["turn", "prompt tokens", "fed with reuse", "TTFT without reuse",
                 "TTFT with reuse", "speed-up"], rows))


if __name__ == "__main__":
    main()
