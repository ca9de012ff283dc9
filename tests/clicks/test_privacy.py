"""Nothing recorded about visitors' choices identifies a visitor: not the schema, not the rows,
not the Redis buffer, not the log, and no cookie."""

from __future__ import annotations

import logging

import pytest
from django.apps import apps
from django.core.cache import cache
from django.db import connection
from django.urls import reverse

from tests.clicks.helpers import buffer, flush, pair_days, visitor  # noqa: F401

pytestmark = pytest.mark.django_db

# Every column the clicks app stores: days, image ids, comparisons, variants, positions and counts. A new
# column fails this test until someone has checked it says nothing about who a visitor is.
NON_IDENTIFYING_COLUMNS = {
    "clicks_pairday": {
        "id", "day", "source_id", "target_id", "comparison", "variant", "position", "impressions", "choices",
    },
    "clicks_pairevidence": {"id", "source_id", "target_id", "choices", "exposure", "score", "links", "updated_at"},
}

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 Zqx-distinctive-agent/7.3"
FORWARDED_FOR = "203.0.113.197"
CONNECTING = "198.51.100.223"


def test_the_clicks_tables_hold_only_known_non_identifying_columns():
    tables = {model._meta.db_table for model in apps.get_app_config("clicks").get_models()}
    assert tables == set(NON_IDENTIFYING_COLUMNS)
    with connection.cursor() as cursor:
        for table, known in NON_IDENTIFYING_COLUMNS.items():
            columns = {column.name for column in connection.introspection.get_table_description(cursor, table)}
            assert columns == known, table


@pytest.mark.urls("tests.clicks.urls")
def test_no_address_user_agent_or_cookie_is_stored_anywhere(buffer, image_factory, settings, caplog):
    settings.TRUSTED_PROXY_COUNT = 1  # the forwarded address is the client's, as behind Caddy
    source, target = image_factory(1), image_factory(2)
    browser = visitor(HTTP_USER_AGENT=USER_AGENT, HTTP_X_FORWARDED_FOR=FORWARDED_FOR, REMOTE_ADDR=CONNECTING)

    with caplog.at_level(logging.DEBUG):
        responses = [
            browser.get(reverse("shown", args=[source.pk]) + f"?list={target.pk}:hybrid"),
            browser.get(reverse("clicks:choice", args=[source.pk, 1, "hybrid", target.pk])),
        ]
        buffered = buffer.head(100)
        flush()

    assert [response.status_code for response in responses] == [200, 302]
    assert all(not response.cookies for response in responses)
    assert len(buffered) == 2 and pair_days() == [(source.pk, target.pk, "hybrid", 1, 1, 1)]
    identifying = ("Zqx-distinctive-agent", FORWARDED_FOR, CONNECTING)
    stored_rows = []
    with connection.cursor() as cursor:
        for table in NON_IDENTIFYING_COLUMNS:
            cursor.execute(f"SELECT row_to_json(t)::text FROM {connection.ops.quote_name(table)} AS t")
            stored_rows += [row for (row,) in cursor.fetchall()]
    # Every key of this test session in Redis and its value, as bytes: the buffer, the rate
    # limits' counts, the page cache's pages.
    redis = cache._cache.get_client(write=True)
    stored_in_redis = []
    for key in redis.scan_iter(match=(settings.CACHES["default"]["KEY_PREFIX"] + ":*").encode(), count=1000):
        kind = redis.type(key)
        values = redis.lrange(key, 0, -1) if kind == b"list" else [redis.get(key)] if kind == b"string" else []
        stored_in_redis += [key, *values]
    assert len(stored_in_redis) > 3  # the buffer and the rate limits' keys at least
    for value in identifying:
        assert not any(value.encode() in item for item in stored_in_redis), value
    for text in (*buffered, *stored_rows, *(record.getMessage() for record in caplog.records)):
        for value in identifying:
            assert value not in text, (value, text)
