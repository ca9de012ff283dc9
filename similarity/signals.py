"""What the embedding pipeline tells the rest of the site, which it does not know by name.

``images_embedded`` is sent by the worker (``similarity.embedding``) after each batch's vectors
are stored and its rows are ready, with ``image_ids`` and ``identity``, while the next batches
decode: an app that reacts to new vectors (the gallery's near-duplicate check) connects to it
in its ``AppConfig.ready()``, and its work is timed as the run's ``duplicates`` step.
"""

from django.dispatch import Signal

images_embedded = Signal()
