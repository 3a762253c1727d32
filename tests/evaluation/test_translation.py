"""Translation metrics: perfect output scores 100, scores match calling sacrebleu directly,
mismatched lengths are a clear error, and the side-by-side view reads well."""

import pytest
import sacrebleu

from lmforge.errors import ConfigError, DataError
from lmforge.evaluation import TranslationScores, side_by_side, translation_scores

SRC = ["Der Hund läuft im Park.", "Ich habe heute keine Zeit.", "Das Wetter ist schön."]
HYP = ["The dog runs in the park.", "I have no time today.", "The weather is nice."]
REF = ["The dog is running in the park.", "I don't have time today.", "The weather is lovely."]


def test_identical_text_scores_100():
    scores = translation_scores(REF, REF)
    assert isinstance(scores, TranslationScores)
    assert scores.bleu == pytest.approx(100.0) and scores.chrf == pytest.approx(100.0)
    assert scores.n == 3


def test_same_numbers_as_sacrebleu():
    scores = translation_scores(HYP, REF)
    assert scores.bleu == pytest.approx(sacrebleu.corpus_bleu(HYP, [REF]).score)
    assert scores.chrf == pytest.approx(sacrebleu.corpus_chrf(HYP, [REF]).score)
    assert 0 < scores.bleu < 100 and 0 < scores.chrf < 100
    assert "BLEU" in scores.signature and "tok:13a" in scores.signature
    assert "chrF" in scores.signature


def test_length_mismatch_names_both_counts():
    with pytest.raises(DataError, match=r"3 hypotheses, 2 references"):
        translation_scores(HYP, REF[:2])
    with pytest.raises(DataError, match=r"3 sources, 2 hypotheses, 3 references"):
        side_by_side(SRC, HYP[:2], REF)
    with pytest.raises(DataError, match="no hypotheses"):
        translation_scores([], [])
    with pytest.raises(DataError, match="not a string"):
        translation_scores([[1, 2]], ["a"])


def test_side_by_side():
    text = side_by_side(SRC, HYP, REF, n=2, width=30)
    assert text.startswith("[1]\n  SRC  Der Hund läuft im Park.")
    assert "  OUT  I have no time today." in text and "[3]" not in text
    assert text.endswith("... 1 more")
    assert all(len(line) <= 30 for line in text.splitlines())
    long = side_by_side(["word " * 40], ["x"], ["y"], width=40)
    assert all(line.startswith(" " * 7) for line in long.splitlines()[2:-2])  # wrapped SRC
    with pytest.raises(ConfigError, match="n"):
        side_by_side(SRC, HYP, REF, n=0)
