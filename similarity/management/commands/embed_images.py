"""Compute (or queue) embeddings: for images missing one, stale ones, or all."""

from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity import pipeline
from similarity.embedding import images_embed_in_batches
from similarity.selectors import image_ids_to_embed
from similarity.weights import WeightsUnavailable, model_identity


class Command(BaseCommand):
    help = (
        "Embed images with the configured model: --missing (no vector from this model yet, "
        "failed ones included), --stale (ready, but from another model) or --all."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--missing", action="store_true")
        which.add_argument("--stale", action="store_true")
        which.add_argument("--all", action="store_true")
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument(
            "--queue", action="store_true", help="Send the work to the Celery workers instead of computing here."
        )

    def handle(self, *args, missing, stale, all, batch_size, queue, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            identity = model_identity()
        except WeightsUnavailable as error:
            raise CommandError(str(error)) from None

        image_ids = image_ids_to_embed(identity=identity, which="all" if all else "stale" if stale else "missing")
        if not image_ids:
            self.stdout.write(f"Nothing to do: every image has a {identity} embedding.")
            return

        if queue:
            pipeline.embeddings_request(image_ids=image_ids)
            self.stdout.write(
                f"Queued {len(image_ids)} image(s) for {identity}; the workers compute them "
                "(if the broker is unreachable, the sweeper sends them later)."
            )
            return

        try:
            with tqdm(total=len(image_ids), desc=f"Embedding ({identity})", unit="image") as progress:
                result = images_embed_in_batches(image_ids=image_ids, batch_size=batch_size, progress=progress.update)
        except WeightsUnavailable as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Done: {len(result.ready)} embedded, {len(result.failed)} failed, "
            f"{len(result.skipped)} skipped (busy elsewhere)."
        )
        for reason, count in Counter(result.failed.values()).most_common():
            self.stdout.write(f"  failed ({count}): {reason}")
