"""Whole responses for anonymous visitors, from Redis, dropped by one generation number.

``store`` keeps the generation and the cached values; ``middleware`` answers a visitor's
request from the cache before sessions, CSRF, URL resolving, the view and its template run;
``views`` marks the views whose responses may be kept. What invalidates them is the gallery's
to say (``gallery.invalidation``): this package knows no app.
"""
