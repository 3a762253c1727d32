"""Translation metrics with sacrebleu: corpus BLEU and chrF, plus a side-by-side text view of
sources, model outputs and references.

Both metrics expect *detokenised* text (plain sentences as a person would write them):
sacrebleu applies its own standard tokenisation (13a for BLEU) so scores are comparable across
papers and runs. Decode model output with the tokenizer first; do not pass subword pieces.
The returned signature records the exact settings, and belongs next to any reported score.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError, DataError


@dataclass
class TranslationScores:
    """Corpus-level scores in 0..100 over ``n`` sentence pairs, with sacrebleu's signatures."""

    bleu: float
    chrf: float
    n: int
    signature: str  # "BLEU <settings> | chrF <settings>"


def _check_lengths(**columns: Sequence[str]) -> int:
    """The common length of the columns; DataError naming every count when they differ."""
    counts = {name: len(col) for name, col in columns.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{c} {name}" for name, c in counts.items())
        raise DataError(f"need one line per sentence in each of {', '.join(counts)}, got "
                        f"{listed}; check that no file has an extra or missing line")
    return next(iter(counts.values()))


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> TranslationScores:
    """Corpus BLEU and chrF of ``hypotheses`` against one reference each (detokenised text)."""
    from sacrebleu.metrics import BLEU, CHRF

    n = _check_lengths(hypotheses=hypotheses, references=references)
    if n == 0:
        raise DataError("no hypotheses/references to score; translate at least one sentence")
    for name, col in (("hypotheses", hypotheses), ("references", references)):
        bad = next((i for i, s in enumerate(col) if not isinstance(s, str)), None)
        if bad is not None:
            raise DataError(f"{name}[{bad}] is a {type(col[bad]).__name__}, not a string; "
                            f"decode token ids to text before scoring")
    hyps, refs = list(hypotheses), [list(references)]
    bleu, chrf = BLEU(), CHRF()
    return TranslationScores(
        bleu=float(bleu.corpus_score(hyps, refs).score),
        chrf=float(chrf.corpus_score(hyps, refs).score),
        n=n,
        signature=f"BLEU {bleu.get_signature()} | chrF {chrf.get_signature()}",
    )


def side_by_side(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
                 n: int = 5, width: int = 100) -> str:
    """The first ``n`` examples as a text block, one per paragraph::

        [1]
          SRC  Der Hund läuft.
          OUT  The dog walks.
          REF  The dog is running.

    Long lines wrap to ``width`` characters, continuing under the text.
    """
    total = _check_lengths(sources=sources, hypotheses=hypotheses, references=references)
    if n < 1:
        raise ConfigError(f"side_by_side n (examples to show) must be >= 1, got {n}")
    if width < 20:
        raise ConfigError(f"side_by_side width must be >= 20 characters, got {width}")
    first, rest = "  {}  ", " " * 7  # label column: 2 spaces + 3-letter label + 2 spaces
    blocks = []
    for i in range(min(n, total)):
        lines = [f"[{i + 1}]"]
        for label, text in (("SRC", sources[i]), ("OUT", hypotheses[i]), ("REF", references[i])):
            text = " ".join(str(text).split()) or "(empty)"
            lines.append(textwrap.fill(text, width=width, initial_indent=first.format(label),
                                       subsequent_indent=rest, break_long_words=True))
        blocks.append("\n".join(lines))
    if total > n:
        blocks.append(f"... {total - n} more")
    return "\n\n".join(blocks)
