"""COCO caption metrics: the wrapper gives exactly what pycocoevalcap's scorers give, Java really runs."""

from __future__ import annotations

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from benchmark.caption_metrics import (
    ALL_METRICS,
    CaptionScorer,
    caption_scores,
    process_meteor,
    spice_unavailable_reason,
)
from benchmark.errors import UserError

REFERENCES = {
    1: [
        "A small red triangle above a blue circle.",
        "a blue circle below a small red triangle",
        "a red triangle",
    ],
    2: ["There is a green square.", "a large green square", "a green square in the middle"],
    3: ["an orange ring next to a white x", "two shapes: an orange ring and a white x"],
    4: ["a yellow diamond at the top", "a picture of a yellow diamond"],
}
PREDICTIONS = {1: "a red triangle above a blue circle", 2: "a green square", 3: "a white ring", 4: ""}


def test_scores_equal_pycocoevalcap_scorers_called_directly() -> None:
    scores = caption_scores(REFERENCES, PREDICTIONS)
    assert set(scores) == set(ALL_METRICS)

    tokenizer = PTBTokenizer()  # as COCOEvalCap.evaluate: PTB-tokenize, then score
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": PREDICTIONS[k]}] for k in REFERENCES})
    assert gts[1][0] == "a small red triangle above a blue circle"  # lower case, punctuation dropped
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor = Meteor()
    try:
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:
        del meteor
    expected = {
        **{f"Bleu_{n}": bleu[n - 1] for n in range(1, 5)},
        "METEOR": meteor_score,
        "ROUGE_L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }
    for name, value in expected.items():
        assert scores[name] == float(value), name
    assert 0.0 < scores["METEOR"] < 1.0  # the METEOR JVM really ran
    reason = spice_unavailable_reason()
    if reason is None:  # CoreNLP 3.6.0 jars installed by hand: SPICE runs or says why not
        assert scores["SPICE"] is not None or "SPICE" in scores.not_available
    else:
        assert scores["SPICE"] is None and scores.not_available == {"SPICE": reason}
        assert "stanford-corenlp-3.6.0" in reason


def test_the_process_meteor_scores_as_a_fresh_one_whatever_it_scored_before() -> None:
    with CaptionScorer(("METEOR",)) as fresh:
        expected = fresh.score(REFERENCES, PREDICTIONS)
    wrong = {k: "a cyan cross on the left" for k in REFERENCES}
    with CaptionScorer(("METEOR",), shared_meteor=True) as shared:
        shared.score(REFERENCES, wrong)
    with CaptionScorer(("METEOR",), shared_meteor=True) as shared:
        assert shared.score(REFERENCES, PREDICTIONS) == expected
    assert process_meteor() is process_meteor()


def test_a_reference_scores_higher_cider_than_a_wrong_caption() -> None:
    right = {k: refs[0] for k, refs in REFERENCES.items()}
    wrong = {k: "a cyan cross on the left" for k in REFERENCES}
    with CaptionScorer(("CIDEr", "Bleu_1")) as scorer:
        right_scores, wrong_scores = scorer.score_many([(REFERENCES, right), (REFERENCES, wrong)])
        alone = scorer.score(REFERENCES, right)
    assert set(right_scores) == {"CIDEr", "Bleu_1"} and right_scores.not_available == {}
    assert right_scores["CIDEr"] > wrong_scores["CIDEr"] + 1.0
    assert alone == right_scores  # scoring sets together changes nothing


def test_bad_inputs_and_missing_java_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="same ids"):
        caption_scores(REFERENCES, {1: "a red triangle"}, metrics=("CIDEr",))
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_scores(REFERENCES, PREDICTIONS, metrics=("WER",))
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UserError, match="`java` is not on PATH") as caught:
        caption_scores(REFERENCES, PREDICTIONS, metrics=("CIDEr",))
    assert "\n" not in str(caught.value)
