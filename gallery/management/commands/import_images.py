"""Import a folder of images, with a progress bar; running it again skips what is there.

Each file goes through the same validation as an admin upload. Content already in the
gallery is recognised by its hash before anything is decoded, so an interrupted import is
finished by running the same command again.
"""

import csv
import os
from collections import defaultdict
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from gallery.archives import is_junk
from gallery.services import image_import_file, tags_from_text

REFUSED_NAMES_SHOWN = 5
CAPTION_HEADERS = {"file", "filename", "file name", "file_name", "name", "path"}


def folder_files(root: Path, *, recursive: bool) -> list[Path]:
    """Files under ``root`` in a stable order; hidden files and folders are left out."""
    if not recursive:
        return sorted(path for path in root.iterdir() if path.is_file() and not path.name.startswith("."))
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found += [Path(directory) / name for name in sorted(files) if not name.startswith(".")]
    return found


def read_captions(path: Path) -> dict[str, tuple[str, list[str]]]:
    """File name (or path relative to the folder) -> (caption, tags), from a CSV.

    Rows of: file name, caption[, tags]; tags are separated by semicolons (or by commas
    inside a quoted cell).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CommandError(f"Cannot read the captions file {path}: {error}") from None
    if rows and rows[0][0].strip().lower() in CAPTION_HEADERS:
        rows = rows[1:]
    captions = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise CommandError(f"{path}: row {number} needs two columns at least: a file name and a caption.")
        tags = tags_from_text(";".join(row[2:]))
        captions[row[0].strip().replace("\\", "/")] = (row[1].strip(), tags)
    return captions


class Command(BaseCommand):
    help = (
        "Import the images in a folder (--recursive: and its subfolders). Captions and tags come "
        "from --captions FILE.csv (file name, caption, tags separated by semicolons) or else the "
        "caption from the file name. Files already in the gallery are skipped (they still get the "
        "CSV's tags), so an interrupted import can simply be run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--recursive", action="store_true", help="Include subfolders.")
        parser.add_argument("--captions", type=Path, metavar="FILE.csv", help="Rows of: file name, caption[, tags].")

    def handle(self, *args, path: Path, recursive: bool, captions: Path | None, verbosity: int, **options):
        root = path.expanduser()
        if not root.is_dir():
            raise CommandError(f"{root} is not a folder.")
        caption_for = read_captions(captions.expanduser()) if captions else {}
        files = [file for file in folder_files(root, recursive=recursive) if not is_junk(file.name)]
        if not files:
            self.stdout.write(f"No files in {root}.")
            return

        added, already, refused = 0, 0, defaultdict(list)
        # Each file is added in a transaction of its own, and its follow-up work is published
        # when it commits: an interruption or a file that breaks leaves no image without it.
        with tqdm(files, desc="Importing", unit="image", disable=verbosity == 0) as progress:
            for file in progress:
                relative = file.relative_to(root).as_posix()
                caption, tags = caption_for.get(relative, caption_for.get(file.name, ("", [])))
                outcome = image_import_file(path=file, name=relative, caption=caption, tag_names=tags)
                if outcome.status == "added":
                    added += 1
                elif outcome.status == "duplicate":
                    already += 1
                else:
                    refused[outcome.error].append(relative)

        total_refused = sum(len(names) for names in refused.values())
        self.stdout.write(
            f"Imported {added} new image(s); {already} already in the gallery; {total_refused} refused."
        )
        for reason, names in sorted(refused.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(names[:REFUSED_NAMES_SHOWN])
            more = f" and {len(names) - REFUSED_NAMES_SHOWN} more" if len(names) > REFUSED_NAMES_SHOWN else ""
            self.stdout.write(f"  refused ({len(names)}): {reason}\n    {shown}{more}")
        unused = len(set(caption_for) - {file.relative_to(root).as_posix() for file in files} - {f.name for f in files})
        if unused:
            self.stdout.write(f"  {unused} caption row(s) named no file in the folder.")
        if added:
            self.stdout.write("Embeddings and thumbnails are queued; the worker computes them.")
