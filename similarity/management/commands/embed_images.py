"""Compute (or queue) embeddings: for images missing one, stale ones, or all."""

from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Exists, OuterRef
from tqdm import tqdm

from gallery.models import Image
from similarity.identity import WeightsUnavailable, model_identity
from similarity.models import Embedding
from similarity.selectors import images_stale_for
from similarity.services import embeddings_compute, embeddings_publish, images_mark_pending, near_duplicates_mark


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

        if all:
            images = Image.objects.all()
        elif stale:
            images = images_stale_for(identity=identity)
        else:
            current = Embedding.objects.filter(image=OuterRef("pk"), model_identity=identity)
            images = Image.objects.filter(~Exists(current))
        image_ids = list(images.order_by("pk").values_list("pk", flat=True))
        if not image_ids:
            self.stdout.write(f"Nothing to do: every image has a {identity} embedding.")
            return
        if not queue:
            from similarity.encoder import get_encoder

            try:
                get_encoder()  # fail before touching any row when the weights are missing
            except WeightsUnavailable as error:
                raise CommandError(str(error)) from None
        images_mark_pending(images=Image.objects.filter(pk__in=image_ids))

        if queue:
            sent = embeddings_publish(image_ids=image_ids)
            verb = "Queued" if sent else "Could not reach the broker for"
            self.stdout.write(f"{verb} {len(image_ids)} image(s) for {identity}.")
            return

        done, failed, skipped = 0, {}, 0
        with tqdm(total=len(image_ids), desc=f"Embedding ({identity})", unit="image") as progress:
            for start in range(0, len(image_ids), batch_size):
                chunk = image_ids[start : start + batch_size]
                result = embeddings_compute(image_ids=chunk, fill_batch=False)
                near_duplicates_mark(image_ids=result.ready)
                done += len(result.ready)
                failed.update(result.failed)
                skipped += len(result.skipped)
                progress.update(len(chunk))
        self.stdout.write(f"Done: {done} embedded, {len(failed)} failed, {skipped} skipped (busy elsewhere).")
        for reason, count in Counter(failed.values()).most_common():
            self.stdout.write(f"  failed ({count}): {reason}")
