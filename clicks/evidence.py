"""The one writer of ``PairEvidence``: rebuilt from the retained ``PairDay`` counts, in SQL.

Run by the beat task ``clicks.evidence_refresh``. Each run aggregates every retained day
again rather than adding the new events: a day that retention deletes then leaves the
evidence by itself, and a run that failed halfway leaves nothing to repair. Only the rows
whose numbers changed are written, so the run says exactly which sources' lists may differ,
and only their cached pages are dropped.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import ranking
from .models import PairEvidence
from .signals import evidence_changed

# Exposure rounded to a millionth and scores to a billionth of an examination: sums of the
# same counts then always give the same stored value, so an unchanged pair is never rewritten.
EXPOSURE_DECIMALS = 6
SCORE_DECIMALS = 9


def retained_since(*, today: datetime.date | None = None) -> datetime.date:
    """The first day whose counts the evidence includes: the last CLICKS_RETENTION_DAYS days, today's included."""
    today = today or timezone.now().date()
    return today - datetime.timedelta(days=settings.CLICKS_RETENTION_DAYS - 1)


def evidence_refresh() -> set[int]:
    """Rebuild ``PairEvidence`` from the retained days; return the sources whose evidence changed.

    Two statements: the site's corrected choice rate (``ranking.prior_rate``), then one that
    aggregates every pair, scores it (``ranking.evidence_score``), counts its links (the
    pictures joined by choices to both ends, kept from CLICKS_MIN_LINKS, the
    CLICKS_LINKS_PER_SOURCE most linked per source), inserts new pairs, updates those whose
    numbers differ and deletes those with neither retained counts nor links left. After commit,
    ``clicks.signals.evidence_changed`` names the changed sources.
    """
    since = retained_since()
    # One definition of position bias (ranking.examination_probability), handed to SQL as an
    # array indexed by position; a position past it counts as the last one.
    positions = range(1, settings.RECOMMENDATIONS_K_MAX + 1)
    examination = [ranking.examination_probability(position) for position in positions]
    parameters = {
        "since": since, "examination": examination, "alpha": settings.CLICKS_PRIOR_STRENGTH,
        "min_links": settings.CLICKS_MIN_LINKS, "links_per_source": settings.CLICKS_LINKS_PER_SOURCE,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_TOTALS_SQL, parameters)
        choices, exposure = cursor.fetchone()
        parameters["rate"] = ranking.prior_rate(choices=float(choices), exposure=float(exposure))
        cursor.execute(_REFRESH_SQL, parameters)
        changed = {source_id for (source_id,) in cursor.fetchall()}
        if changed:
            transaction.on_commit(lambda: evidence_changed.send(sender=PairEvidence, source_ids=changed))
    return changed


# Numeric arithmetic, not float: a float sum depends on the order rows arrive in.
_EXPOSURE = (
    "coalesce(examination.probability[day_rows.position],"
    " examination.probability[array_upper(examination.probability, 1)])"
)
_FROM_RETAINED = f"""
    FROM clicks_pairday AS day_rows
    CROSS JOIN (SELECT %(examination)s::float8[]::numeric[] AS probability) AS examination
    WHERE day_rows.day >= %(since)s
"""

_TOTALS_SQL = f"""
SELECT coalesce(sum(day_rows.choices), 0), coalesce(sum(day_rows.impressions * {_EXPOSURE}), 0)
{_FROM_RETAINED}
"""

_REFRESH_SQL = f"""
WITH fresh AS (
    SELECT day_rows.source_id, day_rows.target_id, sum(day_rows.choices) AS choices,
           round(sum(day_rows.impressions * {_EXPOSURE}), {EXPOSURE_DECIMALS}) AS exposure
    {_FROM_RETAINED}
    GROUP BY day_rows.source_id, day_rows.target_id
),
-- Visitors' choices as undirected edges: a choice from a to b joins them either way.
edges AS (
    SELECT source_id AS one, target_id AS other FROM fresh WHERE choices > 0 AND source_id <> target_id
    UNION
    SELECT target_id, source_id FROM fresh WHERE choices > 0 AND source_id <> target_id
),
-- Two steps: each distinct picture joined to both ends is one link.
linked AS (
    SELECT source_id, target_id, links FROM (
        SELECT first.one AS source_id, second.other AS target_id, count(*) AS links,
               row_number() OVER (PARTITION BY first.one ORDER BY count(*) DESC, second.other) AS place
        FROM edges AS first JOIN edges AS second ON second.one = first.other
        WHERE second.other <> first.one
        GROUP BY first.one, second.other
        HAVING count(*) >= %(min_links)s
    ) AS ranked
    WHERE place <= %(links_per_source)s
),
pairs AS (
    SELECT coalesce(fresh.source_id, linked.source_id) AS source_id,
           coalesce(fresh.target_id, linked.target_id) AS target_id,
           coalesce(fresh.choices, 0) AS choices, coalesce(fresh.exposure, 0) AS exposure,
           coalesce(linked.links, 0) AS links
    FROM fresh FULL JOIN linked ON linked.source_id = fresh.source_id AND linked.target_id = fresh.target_id
),
scored AS (
    SELECT source_id, target_id, choices, exposure, links,
           CASE WHEN %(rate)s::numeric > 0
                THEN round((choices + %(alpha)s::numeric * %(rate)s::numeric)
                           / (%(rate)s::numeric * (exposure + %(alpha)s::numeric)), {SCORE_DECIMALS})
                ELSE 1 END AS score
    FROM pairs
),
written AS (
    INSERT INTO clicks_pairevidence AS evidence (source_id, target_id, choices, exposure, score, links, updated_at)
    SELECT source_id, target_id, choices, exposure::float8, score::float8, links, now() FROM scored
    ON CONFLICT ON CONSTRAINT clicks_pairevidence_unique DO UPDATE
        SET choices = EXCLUDED.choices, exposure = EXCLUDED.exposure, score = EXCLUDED.score,
            links = EXCLUDED.links, updated_at = EXCLUDED.updated_at
        WHERE (evidence.choices, evidence.exposure, evidence.score, evidence.links)
              IS DISTINCT FROM (EXCLUDED.choices, EXCLUDED.exposure, EXCLUDED.score, EXCLUDED.links)
    RETURNING evidence.source_id
),
dropped AS (
    DELETE FROM clicks_pairevidence AS evidence
    WHERE NOT EXISTS (
        SELECT 1 FROM pairs WHERE pairs.source_id = evidence.source_id AND pairs.target_id = evidence.target_id
    )
    RETURNING evidence.source_id
)
SELECT source_id FROM written UNION SELECT source_id FROM dropped
"""
