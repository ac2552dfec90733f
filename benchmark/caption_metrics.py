"""COCO caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr (headline), SPICE.

As COCO's evaluation (``pycocoevalcap.eval.COCOEvalCap``) does, references and
predictions first go through the Stanford PTB tokenizer (lower case,
punctuation dropped), then each scorer runs on the tokenized captions. The
tokenizer and METEOR are Java programs shipped inside pycocoevalcap, so
``java`` must be on PATH; a missing one is one clear error.

SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use.
This suite never downloads at run time: SPICE runs only if those jars are
already in pycocoevalcap's ``spice/lib``; otherwise its score is ``None`` and
``not_available["SPICE"]`` says why (never a silent zero).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

HEADLINE_METRIC = "CIDEr"
BLEU_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
ALL_METRICS: tuple[str, ...] = (*BLEU_METRICS, "METEOR", "ROUGE_L", "CIDEr", "SPICE")
Captions = Mapping[Hashable, Sequence[str]]  # id → its captions
SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class CaptionScores(dict[str, float | None]):
    """Metric name → corpus score (``None`` where the metric could not run); ``not_available`` says why."""

    def __init__(self, scores: Mapping[str, float | None], not_available: Mapping[str, str]) -> None:
        super().__init__(scores)
        self.not_available: dict[str, str] = dict(not_available)


def require_java() -> str:
    """Path of ``java``; a one-line UserError when it is missing."""
    java = shutil.which("java")
    if java is None:
        raise UserError(
            "caption metrics need Java: `java` is not on PATH (the PTB tokenizer and METEOR of "
            "pycocoevalcap are Java programs); install a JRE, e.g. `apt-get install default-jre-headless`"
        )
    return java


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run offline here, or None when its CoreNLP jars are present."""
    try:
        import pycocoevalcap.spice.spice as spice_module
    except ImportError as error:  # pragma: no cover - pycocoevalcap is a dependency
        return f"pycocoevalcap's SPICE cannot be imported: {error}"
    lib = Path(spice_module.__file__).resolve().parent / "lib"
    missing = [name for name in SPICE_CORENLP_JARS if not (lib / name).is_file()]
    if missing:
        return (
            f"SPICE needs {', '.join(missing)} in {lib}; pycocoevalcap downloads them on first use "
            "and this suite never downloads at run time (put them there to enable SPICE)"
        )
    return None


class _QuietSubprocess:
    """``subprocess`` as pycocoevalcap's PTB tokenizer module sees it, but its Java process's stderr
    (a "PTBTokenizer tokenized N tokens" line per call, dozens per cell) is captured, not printed."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(*args, **kwargs)


def tokenize(captions: Captions) -> dict[Hashable, list[str]]:
    """PTB-tokenize captions per id, as COCO's evaluation does (needs Java)."""
    require_java()
    from pycocoevalcap.tokenizer import ptbtokenizer

    ptbtokenizer.subprocess = _QuietSubprocess()  # type: ignore[assignment]
    return ptbtokenizer.PTBTokenizer().tokenize(
        {key: [{"caption": text} for text in texts] for key, texts in captions.items()}
    )


_PROCESS_METEOR: Any = None  # see process_meteor


def process_meteor() -> Any:
    """One METEOR scorer (and JVM) for the whole process, started on first use, ended at exit.

    A grid's worker processes score one cell after another; loading METEOR's
    paraphrase tables anew for every cell costs about 10 s. Its scores do not
    depend on what it scored before (each ``SCORE`` line is scored alone and
    ``EVAL`` sums the statistics it is given), so sharing changes no number.
    """
    global _PROCESS_METEOR
    if _PROCESS_METEOR is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _PROCESS_METEOR = Meteor()
        atexit.register(_end_process_meteor)
    return _PROCESS_METEOR


def _end_process_meteor() -> None:
    global _PROCESS_METEOR
    meteor, _PROCESS_METEOR = _PROCESS_METEOR, None
    if meteor is not None:
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


class CaptionScorer:
    """Scores caption sets with the chosen metrics, starting METEOR's JVM once (it loads for seconds).

    Use as a context manager (``with CaptionScorer() as scorer: scorer.score(refs, preds)``);
    ``score_many`` also tokenizes every set in one tokenizer run. ``shared_meteor`` uses the
    process's METEOR (``process_meteor``) instead of one of its own, and leaves it running.
    """

    def __init__(self, metrics: Sequence[str] = ALL_METRICS, shared_meteor: bool = False) -> None:
        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown caption metrics {unknown}; known: {list(ALL_METRICS)}")
        require_java()
        self.metrics = tuple(metrics)
        self.shared_meteor = shared_meteor
        self._meteor: Any = None

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the METEOR process, if one was started."""
        if self._meteor is not None:
            meteor, self._meteor = self._meteor, None
            del meteor  # pycocoevalcap's Meteor.__del__ closes its pipe and kills the JVM

    def score(self, references: Captions, predictions: Mapping[Hashable, str]) -> CaptionScores:
        return self.score_many([(references, predictions)])[0]

    def score_many(self, jobs: Sequence[tuple[Captions, Mapping[Hashable, str]]]) -> list[CaptionScores]:
        """One ``CaptionScores`` per (references, predictions) pair; each pair is its own corpus."""
        for references, predictions in jobs:
            _check_pair(references, predictions)
        gts = tokenize(
            {(j, key): list(texts) for j, (refs, _) in enumerate(jobs) for key, texts in refs.items()}
        )
        res = tokenize({(j, key): [preds[key]] for j, (refs, preds) in enumerate(jobs) for key in refs})
        results = []
        for j, (references, _) in enumerate(jobs):
            job_gts = {key: gts[(j, key)] for key in references}
            job_res = {key: res[(j, key)] for key in references}
            not_available: dict[str, str] = {}
            scores = self._run_scorers(job_gts, job_res, not_available)
            results.append(CaptionScores({m: scores[m] for m in self.metrics}, not_available))
        return results

    def _run_scorers(
        self, gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]], not_available: dict[str, str]
    ) -> dict[str, float | None]:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        wanted = set(self.metrics)
        out: dict[str, float | None] = {}
        if wanted & set(BLEU_METRICS):
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            out |= {name: float(value) for name, value in zip(BLEU_METRICS, bleu, strict=True)}
        if "METEOR" in wanted:
            if self.shared_meteor:
                meteor = process_meteor()
            else:
                if self._meteor is None:
                    from pycocoevalcap.meteor.meteor import Meteor

                    self._meteor = Meteor()
                meteor = self._meteor
            out["METEOR"] = float(meteor.compute_score(gts, res)[0])
        if "ROUGE_L" in wanted:
            out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
        if "CIDEr" in wanted:
            out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        if "SPICE" in wanted:
            out["SPICE"] = _spice(gts, res, not_available)
        return out


def caption_scores(
    references: Captions,
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] = ALL_METRICS,
) -> CaptionScores:
    """Corpus scores of ``predictions`` (one caption per id) against ``references`` (≥ 1 per id).

    ``metrics`` picks a subset of ``ALL_METRICS`` (METEOR starts a JVM that
    loads its paraphrase tables: seconds; ``CaptionScorer`` reuses one). Both
    mappings must hold the same ids. CIDEr is the headline metric.
    """
    with CaptionScorer(metrics) as scorer:
        return scorer.score(references, predictions)


def _check_pair(references: Captions, predictions: Mapping[Hashable, str]) -> None:
    if set(references) != set(predictions):
        raise ValueError("references and predictions must hold the same ids")
    if not references:
        raise ValueError("no captions to score")
    empty = [key for key, texts in references.items() if not texts]
    if empty:
        raise ValueError(f"ids without a reference caption: {empty[:5]}")


def _spice(
    gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]], not_available: dict[str, str]
) -> float | None:
    reason = spice_unavailable_reason()
    if reason is not None:
        not_available["SPICE"] = reason
        return None
    from pycocoevalcap.spice.spice import Spice

    try:
        score: Any = Spice().compute_score(gts, res)[0]
    except (subprocess.CalledProcessError, OSError, ValueError) as error:
        not_available["SPICE"] = f"SPICE failed: {error}"
        return None
    return float(score)
