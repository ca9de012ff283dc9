"""Which views' answers may be kept whole for anonymous visitors."""

from __future__ import annotations


def public_page(view):
    """Mark a view (an ``as_view()`` function) whose GET answers are the same for every
    anonymous visitor: ``PageCacheMiddleware`` keeps them whole and answers from the cache.

    Such a view must not depend on who asks beyond whether they are signed in (only requests
    without a session cookie or credentials are answered from the cache), nor on any other
    cookie. A response that sets a cookie (a CSRF token, messages) is never kept. ``Vary:
    Cookie`` alone does not stop it: the API's authentication reads the empty session of an
    anonymous request, which adds that header, and the answer is still everyone's.
    """
    view.page_cache = True
    return view
