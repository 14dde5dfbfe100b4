"""/favicon.ico: browsers ask for it on every page that names no icon of its own."""

from __future__ import annotations

import io

from django.test import Client
from PIL import Image


def test_it_serves_the_favicon_as_an_icon_with_three_sizes() -> None:
    response = Client().get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert response["Cache-Control"] == "public, max-age=86400"
    icon = Image.open(io.BytesIO(response.content))
    assert icon.format == "ICO"
    assert icon.info["sizes"] == {(16, 16), (32, 32), (48, 48)}


def test_it_answers_head_for_the_favicon_and_refuses_a_post() -> None:
    assert Client().head("/favicon.ico").status_code == 200
    assert Client().post("/favicon.ico").status_code == 405
