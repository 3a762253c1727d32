"""Translation decoding speed: lmforge's ``greedy_decode`` and ``beam_search`` against
transformers' ``generate`` on one MarianMT model (random weights, no hub here), in the same
run, on the 1,000 English sources of Multi30k's test_2016_flickr.

The MarianMTModel has the shape of the Multi30k benchmark model (by default d_model 256,
feed-forward 1024, 3 encoder + 3 decoder layers, 4 heads, vocabulary 8000); lmforge gets the
same weights through ``lmforge import`` (``import_hf``). The sources are tokenized with a joint
English/German BPE tokenizer trained here on Multi30k's training side, end with </s>, are
sorted by length and cut into the same padded batches for both; the two libraries alternate
batch by batch, so that other processes on the machine slow both alike.

Modes (``--modes``):

* ``greedy``, ``beam``: at most ``--max-new-tokens`` tokens per sentence for both, stopping at
  </s>. Random weights hardly ever write </s>, so both run the full budget: the same work.
  Greedy outputs must be identical token for token; for beam search the share of identical
  outputs is reported (see docs/interop.md for the one known difference).
* ``greedy-ref``: greedy, each sentence ending after as many tokens as its German reference
  translation has (capped at the budget), as a trained model's outputs end: lmforge gets
  those lengths as its per-sentence limits, transformers a logits processor that forces </s>
  there. This is where finished sentences leaving the batch (lmforge) differ from finished
  rows padded until the longest in the batch ends (transformers).

    python bench/translate_speed.py [--limit N] [--batch-size 64] [--max-new-tokens 60]
        [--beam 5] [--threads 2] [--modes greedy,beam,greedy-ref] [--repeats 1] [--profile]
        [--d-model 256 --ffn 1024 --layers 3 --heads 4 --vocab 8000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from lmforge.inference.translate import beam_search, greedy_decode, pad_batch  # noqa: E402
from lmforge.interop import import_hf  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402
from lmforge.tokenizers import train_tokenizer  # noqa: E402

DATA = Path("/work/shared/data/multi30k")
"""Multi30k: train.{en,de}.gz for the tokenizer, test_2016_flickr.{en,de}.gz; --data."""
SPECIALS = ["</s>", "<unk>", "<pad>"]  # </s> = 0 and <unk> = 1 as in Marian; <pad> = 2
EOS, PAD = 0, 2
Batch = tuple[list[int], torch.Tensor, torch.Tensor]
"""(sentence indices, source ids (B, S), mask (B, S))."""


def read_lines(path: Path, limit: int = 0) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:limit] if limit else lines


def build_models(args, work: Path):
    """A random MarianMTModel saved with the tokenizer, and lmforge's import of it."""
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tok = train_tokenizer([str(args.data / "train.en.gz"), str(args.data / "train.de.gz")],
                          kind="bpe", vocab_size=args.vocab, special_tokens=SPECIALS)
    torch.manual_seed(args.seed)
    hf_cfg = MarianConfig(
        vocab_size=args.vocab, d_model=args.d_model, encoder_layers=args.layers,
        decoder_layers=args.layers, encoder_attention_heads=args.heads,
        decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn, decoder_ffn_dim=args.ffn,
        max_position_embeddings=256, activation_function="swish", scale_embedding=True,
        dropout=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        forced_eos_token_id=None)
    hf = MarianMTModel(hf_cfg).eval()
    hf.save_pretrained(work / "hf")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(work / "hf")
    lm = load_model_dir(import_hf(work / "hf", work / "lmforge"))
    return hf, lm.model, tok


def batches(tok, texts: list[str], size: int) -> list[Batch]:
    """Sources + </s>, sorted by length, in padded batches."""
    ids = [e.ids + [EOS] for e in tok.encode_batch(texts, add_special_tokens=False)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = []
    for s in range(0, len(order), size):
        chunk = order[s:s + size]
        src, mask = pad_batch([ids[i] for i in chunk], PAD)
        out.append((chunk, src, mask))
    return out


def _force_eos(lengths: torch.Tensor):
    """A transformers logits processor: row i writes </s> after ``lengths[i]`` tokens."""
    from transformers import LogitsProcessor

    class ForceEos(LogitsProcessor):
        def __call__(self, input_ids, scores):
            end = lengths == input_ids.shape[1] - 1  # tokens written so far (start excluded)
            if end.any():
                scores[end] = float("-inf")
                scores[end, EOS] = 0.0
            return scores

    return ForceEos()


def run_hf(model, data: list[Batch], budget: dict[int, int], beams: int) -> dict[int, list[int]]:
    """Each sentence's output tokens (without start and end token). ``budget``: the number
    of tokens of each sentence; with ``beams`` = 0, greedy forced to end there."""
    from transformers import LogitsProcessorList

    out: dict[int, list[int]] = {}
    with torch.no_grad():
        for chunk, src, mask in data:
            lengths = torch.tensor([budget[i] for i in chunk])
            kw = dict(max_new_tokens=int(lengths.max()), num_beams=max(beams, 1), do_sample=False)
            if beams > 1:
                kw |= dict(early_stopping=True, length_penalty=1.0)
            if beams == 0:
                kw |= dict(max_new_tokens=int(lengths.max()) + 1,
                           logits_processor=LogitsProcessorList([_force_eos(lengths)]))
            seqs = model.generate(input_ids=src, attention_mask=mask.long(), **kw)
            for i, row in zip(chunk, seqs[:, 1:].tolist()):  # drop the start token
                out[i] = row[:row.index(EOS)] if EOS in row else row
    return out


def run_ours(model, data: list[Batch], budget: dict[int, int], beams: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for chunk, src, mask in data:
        limits = torch.tensor([budget[i] for i in chunk])
        if beams <= 1:
            res = greedy_decode(model, src, mask, start_id=PAD, eos_id=EOS, limits=limits)
        else:
            res = beam_search(model, src, mask, start_id=PAD, eos_id=EOS, limits=limits,
                              beam_size=beams, length_penalty=1.0, early_stopping=True)
        out.update(zip(chunk, res))
    return out


def timed_pair(ours, hf, data: list[Batch], budget: dict[int, int], beams: int,
               repeats: int = 1):
    """Both libraries on every batch, interleaved batch by batch (in alternating order), so
    that load from other processes slows both alike; with ``repeats`` > 1 each batch is
    decoded that many times by each and the fastest run counts. Returns ({"ours", "hf"} wall
    seconds, the same in process CPU seconds, {"ours", "hf"} outputs in sentence order)."""
    wall = {"ours": 0.0, "hf": 0.0}
    cpu = {"ours": 0.0, "hf": 0.0}
    out: dict[str, dict[int, list[int]]] = {"ours": {}, "hf": {}}
    runs = {"ours": lambda b: run_ours(ours, b, budget, beams),
            "hf": lambda b: run_hf(hf, b, budget, beams)}
    for k, batch in enumerate(data):
        best = {name: (float("inf"), float("inf")) for name in runs}
        for r in range(repeats):
            for name in (("ours", "hf") if (k + r) % 2 == 0 else ("hf", "ours")):
                t0, c0 = time.perf_counter(), time.process_time()
                out[name].update(runs[name]([batch]))
                t = (time.perf_counter() - t0, time.process_time() - c0)
                best[name] = min(best[name], t)
        for name, (w, c) in best.items():
            wall[name] += w
            cpu[name] += c
    return wall, cpu, {name: [o[i] for i in sorted(o)] for name, o in out.items()}


def profile(model, data: list[Batch], budget: dict[int, int], beams: int) -> None:
    """torch profiler over lmforge's decoding of the first batch: where the time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run_ours(model, data[:1], budget, beams)
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40,
        max_shapes_column_width=70))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="decode the first N sources (0 = all 1000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=60)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=3, help="encoder layers = decoder layers")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=1,
                    help="decode each batch this many times with each library; the fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="the Multi30k directory")
    ap.add_argument("--modes", default="greedy,beam,greedy-ref",
                    help="comma-separated: greedy, beam, greedy-ref")
    ap.add_argument("--profile", action="store_true", help="profile lmforge on one batch")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = read_lines(args.data / "test_2016_flickr.en.gz", args.limit)
    refs = read_lines(args.data / "test_2016_flickr.de.gz", args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        hf, ours, tok = build_models(args, Path(tmp))
        run(args, texts, refs, hf, ours, tok)


def run(args, texts: list[str], refs: list[str], hf, ours, tok) -> None:
    data = batches(tok, texts, args.batch_size)
    n = len(texts)
    n_src = sum(m.sum().item() for _, _, m in data) / n
    ref_len = {i: max(1, min(len(e.ids), args.max_new_tokens))
               for i, e in enumerate(tok.encode_batch(refs, add_special_tokens=False))}
    print(f"{machine()}; float32")
    print(f"model: MarianMT d_model {args.d_model}, ffn {args.ffn}, {args.layers}+{args.layers} "
          f"layers, {args.heads} heads, vocab {args.vocab} ({ours.num_params() / 1e6:.1f}M "
          f"parameters, random weights); {n} sources, {n_src:.1f} tokens on average with </s>; "
          f"batches of {args.batch_size}; at most {args.max_new_tokens} new tokens; fastest of "
          f"{args.repeats} run(s) per batch")

    rows, results = [], {}
    for mode in args.modes.split(","):
        beams = {"greedy": 1, "beam": args.beam, "greedy-ref": 0}[mode]
        budget = ref_len if mode == "greedy-ref" else dict.fromkeys(range(n), args.max_new_tokens)
        warm = [(c[:4], s[:4], m[:4]) for c, s, m in data[:1]]
        run_ours(ours, warm, dict.fromkeys(range(n), 4), beams)  # warm-up
        run_hf(hf, warm, dict.fromkeys(range(n), 4), beams)
        wall, cpu, out = timed_pair(ours, hf, data, budget, beams, args.repeats)
        same = sum(a == b for a, b in zip(out["ours"], out["hf"]))
        if beams <= 1 and same != n:
            raise SystemExit(f"{mode}: outputs differ on {n - same} sentences")
        mean_len = {k: sum(map(len, v)) / n for k, v in out.items()}
        name = {"greedy": "greedy", "beam": f"beam {args.beam}",
                "greedy-ref": "greedy, reference lengths"}[mode]
        rows.append([name, f"{n / wall['ours']:.1f}", f"{n / wall['hf']:.1f}",
                     f"{wall['hf'] / wall['ours']:.2f}x", f"{cpu['hf'] / cpu['ours']:.2f}x",
                     f"{mean_len['ours']:.1f} / {mean_len['hf']:.1f}", f"{same}/{n}"])
        results[name] = {"lmforge_sent_s": n / wall["ours"], "hf_sent_s": n / wall["hf"],
                         "ratio": wall["hf"] / wall["ours"], "cpu_ratio": cpu["hf"] / cpu["ours"],
                         "wall_s": wall, "cpu_s": cpu, "mean_len": mean_len, "identical": same,
                         "sentences": n}
        if args.profile:
            profile(ours, data, budget, beams)
    print(table(["decoding", "lmforge sent/s", "transformers sent/s", "speed-up",
                 "speed-up in CPU time", "mean output tokens (lmforge / transformers)",
                 "identical outputs"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
