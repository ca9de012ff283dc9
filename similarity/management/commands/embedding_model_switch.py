"""Switch the pages to another model's vectors, in one step, once every image has one."""

from django.core.management.base import BaseCommand, CommandError

from similarity.selectors import embedding_status_counts
from similarity.serving import SwitchRefused, serving_identity, serving_model_switch
from similarity.weights import WeightsUnavailable, model_identity


class Command(BaseCommand):
    help = (
        "Make the site compare the configured model's vectors (EMBEDDING_WEIGHTS), or --identity's. "
        "Refuses while images lack one, so visitors never lose neighbours; --force switches anyway."
    )

    def add_arguments(self, parser):
        parser.add_argument("--identity", help="A stored model identity; default: the configured model's.")
        parser.add_argument("--force", action="store_true", help="Switch even if some images have no vector yet.")

    def handle(self, *args, identity, force, **options):
        try:
            identity = identity or model_identity()
        except WeightsUnavailable as error:
            raise CommandError(str(error)) from None
        before = serving_identity()
        if identity == before:
            self.stdout.write(f"The site already serves {identity}.")
            return
        try:
            covered = serving_model_switch(identity=identity, images_total=embedding_status_counts()["ready"], force=force)
        except SwitchRefused as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"The site now serves {identity} ({covered} vectors), instead of {before}. "
            f"Drop the older vectors when you are sure: manage.py embeddings_drop --identity {before}"
        )
