"""What the embedding pipeline tells the rest of the site, which it does not know by name.

``images_embedded`` is sent by the worker (``similarity.embedding``) after each batch's vectors
are stored and its rows are ready, with ``image_ids`` and ``identity``, while the next batches
decode: an app that reacts to new vectors (the gallery's near-duplicate check) connects to it
in its ``AppConfig.ready()``, and its work is timed as the run's ``duplicates`` step.

The others are sent inside the transaction that makes the change, so that a receiver can act
once it commits (``transaction.on_commit``): what pages show changes with each of them.

- ``vectors_stored``: vectors of ``image_ids`` for model ``identity`` were stored or replaced.
- ``embedding_status_changed``: the embedding status of ``image_ids`` is now ``status``.
- ``serving_model_switched``: pages now compare the vectors of model ``identity``.
"""

from django.dispatch import Signal

images_embedded = Signal()
vectors_stored = Signal()
embedding_status_changed = Signal()
serving_model_switched = Signal()
