"""What the clicks app tells the rest of the site, which it does not know by name.

``evidence_changed`` is sent after the transaction that rebuilt the evidence commits
(``clicks.evidence.evidence_refresh``), with ``source_ids``: the images whose hybrid lists
may now differ. A receiver that keeps pages (the page cache's invalidation) drops only
those images' pages; every other list is as it was.
"""

from django.dispatch import Signal

evidence_changed = Signal()
