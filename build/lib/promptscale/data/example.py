"""The one record every reader produces, whatever the task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Example:
    """One unit of prediction.

    classification: ``fields`` fill the template, ``label`` indexes the task's label list.
    choice: ``candidates`` are the texts to score, ``label`` is the first gold index and
    ``gold`` every gold index (ReCoRD can have several); ``answers`` are ReCoRD's gold texts.
    MultiRC and WSC are classification over one candidate each (answer option / referent);
    ``group`` ties MultiRC's options of one question together for exact match.
    tagging: ``tokens`` and IOB2 ``tags`` (strings).
    ``label`` is None for unlabeled data.
    """

    guid: str
    fields: dict[str, str]
    label: int | None = None
    candidates: list[str] | None = None
    gold: list[int] | None = None
    answers: list[str] | None = None
    group: str | None = None
    tokens: list[str] | None = None
    tags: list[str] | None = None
