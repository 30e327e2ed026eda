"""Concept density of captions: the noun statistics of the paper's Table 1 (section 2.4).

Nouns are found with TextBlob's pattern part-of-speech tagger (Penn tags ``NN``, ``NNS``, ``NNP``, ``NNPS``), whose
lexicon ships inside the ``textblob`` wheel, so it works offline right after ``pip install textblob`` (NLTK's and
spaCy's taggers need separate model downloads). Nouns are counted lower-cased, as written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache

#: Penn Treebank noun tags.
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})


@lru_cache(maxsize=1)
def _tagger():
    try:
        from textblob.en.taggers import PatternTagger
    except ImportError as error:
        raise ImportError("Concept density needs TextBlob's tagger: `pip install textblob`.") from error
    return PatternTagger()


def caption_nouns(caption: str) -> list[str]:
    """The nouns of ``caption``, lower-cased, in order (with repeats)."""
    return [word.lower() for word, tag in _tagger().tag(caption, tokenize=True) if tag in NOUN_TAGS and word.isalpha()]


@dataclass(frozen=True)
class ConceptDensity:
    """Table 1's columns for a set of captions.

    Attributes:
        valid_distinct_nouns: VN, distinct nouns appearing more than ``min_count`` times.
        distinct_nouns: DN, distinct nouns.
        valid_ratio: VN / DN (0 when there is no noun).
        total_nouns: noun occurrences over all captions.
        nouns_per_image: total nouns / number of captions.
        num_captions: captions counted.
    """

    valid_distinct_nouns: int
    distinct_nouns: int
    valid_ratio: float
    total_nouns: int
    nouns_per_image: float
    num_captions: int

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for JSON)."""
        return asdict(self)

    def table_row(self, name: str) -> str:
        """One row in the paper's layout: ``name  VN/DN = ratio  total  average/Img``."""
        return (
            f"{name}  {self.valid_distinct_nouns}/{self.distinct_nouns} = {100 * self.valid_ratio:.1f}%  "
            f"{self.total_nouns}  {self.nouns_per_image:.1f}/Img"
        )


def concept_density(captions: Iterable[str], min_count: int = 10) -> ConceptDensity:
    """Noun statistics of ``captions`` (paper Table 1); valid nouns are those appearing more than ``min_count`` times.

    Empty or missing captions count as images with no noun.
    """
    if min_count < 0:
        raise ValueError(f"`min_count` must be >= 0, got {min_count}.")
    counts: Counter[str] = Counter()
    num_captions = 0
    for caption in captions:
        if caption is not None and not isinstance(caption, str):
            raise ValueError(f"Captions must be strings, got {type(caption).__name__}.")
        num_captions += 1
        counts.update(caption_nouns(caption or ""))
    if num_captions == 0:
        raise ValueError("No caption to measure.")
    distinct = len(counts)
    valid = sum(1 for count in counts.values() if count > min_count)
    total = sum(counts.values())
    return ConceptDensity(
        valid_distinct_nouns=valid,
        distinct_nouns=distinct,
        valid_ratio=valid / distinct if distinct else 0.0,
        total_nouns=total,
        nouns_per_image=total / num_captions,
        num_captions=num_captions,
    )


def dataset_concept_density(
    path: str,
    column: str = "text",
    *,
    split: str = "train",
    max_samples: int | None = None,
    min_count: int = 10,
) -> ConceptDensity:
    """:func:`concept_density` of one caption column of a dataset, streamed (see
    :func:`~.streaming.load_streaming_dataset` for ``path``), over at most ``max_samples`` rows."""
    from .streaming import load_streaming_dataset

    dataset = load_streaming_dataset(path, split=split)
    if dataset.column_names is not None and column not in dataset.column_names:
        raise ValueError(f"Column {column!r} is not in {path}; its columns are {dataset.column_names}.")
    dataset = dataset.select_columns([column])
    if max_samples is not None:
        dataset = dataset.take(max_samples)
    return concept_density((row[column] for row in dataset), min_count=min_count)
