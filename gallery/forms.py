from django import forms
from django.conf import settings

from .services import tag_names_too_long, tags_from_text


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files from one input; each is judged later, on its own, by the service."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = [item for item in (data if isinstance(data, (list, tuple)) else [data]) if item]
        if not files and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        return files


class ImageUploadForm(forms.Form):
    files = MultipleFileField(
        label="Images",
        help_text="Choose one image or many (JPEG, PNG, WebP, GIF, BMP or TIFF), or zip archives of them.",
        widget=MultipleFileInput(attrs={"accept": "image/*,.zip,application/zip"}),
    )
    caption = forms.CharField(
        required=False,
        max_length=300,
        help_text="Optional. Given to every image in this upload; left empty, each image is "
        "captioned from its file name. Captions can be edited in the list afterwards.",
    )
    tags = forms.CharField(
        required=False,
        max_length=500,
        help_text="Optional. Tags for every image in this upload, separated by commas (e.g. harbour, night).",
    )

    def clean_tags(self):
        # Refused as the "Add tags" action refuses them, rather than cut short in silence.
        tags = self.cleaned_data["tags"]
        too_long = tag_names_too_long(tags_from_text(tags))
        if too_long:
            raise forms.ValidationError(too_long, code="tag_too_long")
        return tags


def requested_k(raw: str | None) -> int:
    """?k= from 1 to RECOMMENDATIONS_K_MAX; anything else falls back to the default."""
    try:
        k = int(raw)
    except (TypeError, ValueError):
        return settings.RECOMMENDATIONS_K
    return k if 1 <= k <= settings.RECOMMENDATIONS_K_MAX else settings.RECOMMENDATIONS_K


def requested_diverse(raw: str | None) -> bool:
    """?diverse=1 (or 0); without it, the DIVERSITY_DEFAULT setting."""
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    return settings.DIVERSITY_DEFAULT


def requested_variant(raw: str | None) -> str | None:
    """?variant=visual or hybrid; anything else (or nothing) is the default comparison (None)."""
    return raw if raw in ("visual", "hybrid") else None


class SearchForm(forms.Form):
    """A visitor's photo: judged like an admin upload (same formats and limits), never stored."""

    photo = forms.FileField(
        label="Your photo",
        help_text="JPEG, PNG, WebP, GIF, BMP or TIFF. It is only used for this search and not kept.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
    )
    k = forms.TypedChoiceField(
        label="Show", coerce=int, choices=[(n, n) for n in (3, 6, 12, 24)], initial=6, required=False
    )

    def clean_photo(self):
        """The decoded picture (decoding is the check): raises ValidationError with the reason."""
        from .validation import picture_validate

        return picture_validate(self.cleaned_data["photo"])
