"""Delete a model's vectors once the site no longer serves it (the last step of an upgrade)."""

from django.core.management.base import BaseCommand, CommandError

from similarity.serving import SwitchRefused, embeddings_drop, identities_in_store


class Command(BaseCommand):
    help = "Delete every vector of one model identity; the model the site serves is refused."

    def add_arguments(self, parser):
        parser.add_argument("--identity", required=True)

    def handle(self, *args, identity, **options):
        stored = identities_in_store()
        if identity not in stored:
            known = ", ".join(f"{name} ({count})" for name, count in sorted(stored.items())) or "none"
            raise CommandError(f"No vectors of {identity} are stored. Stored: {known}.")
        try:
            deleted = embeddings_drop(identity=identity)
        except SwitchRefused as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Deleted {deleted} {identity} vector(s).")
