"""HTTP reason phrases that Twisted (under daphne) does not know."""

from __future__ import annotations

from http import HTTPStatus

from twisted.web import http


def add_missing_reason_phrases() -> None:
    """Give Twisted a reason phrase for every standard status, so 429 is not "429 Unknown Status".

    daphne sets a response's status line from twisted.web.http.RESPONSES, which lacks 429 (and a
    few others); it looks the phrase up per response, so adding it at start-up is enough.
    """
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))
