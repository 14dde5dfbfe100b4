"""The browser tests' daphne runs on the tests' own Redis database (TEST_REDIS_URL), not a fixed one,
so that two checkouts' test runs on one Redis server do not share channel groups, queues or counters."""

from __future__ import annotations

import httpx
import pytest
import redis
from django.conf import settings

from tests.browser.conftest import Platform

pytestmark = pytest.mark.browser


def test_it_runs_the_browser_tests_daphne_on_the_tests_redis_database(platform: Platform) -> None:
    tests_redis = redis.Redis.from_url(settings.REDIS_URL)
    tests_redis.flushdb()

    response = httpx.post(f"{platform.url}/api/widget/conversations", json={"locale": "en"}, timeout=10)

    assert response.status_code == 201, response.text
    # daphne counted the creation against the client's rate limit in the tests' Redis database.
    assert len(tests_redis.keys("*rl:*")) == 1
    assert platform.env["REDIS_URL"] == settings.REDIS_URL
