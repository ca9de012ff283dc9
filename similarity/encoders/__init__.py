"""The models that turn pictures into vectors: one module per model, found through ``registry``.

``base`` says what an encoder is; ``registry`` names the known ones and loads the configured
one (EMBEDDING_ENCODER) once per process; ``resnet18`` is the site's model; ``gpu`` chooses the
device and decodes JPEGs there. Only ``resnet18`` and ``gpu`` import torch, and only the worker
imports them.
"""
