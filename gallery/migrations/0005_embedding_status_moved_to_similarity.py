"""The embedding status columns go: similarity.0004 copied them into its rows per (image, model)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('gallery', '0004_renditions_storage'),
        # After the copy: the columns are read there first.
        ('similarity', '0004_embedding_jobs'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='image',
            name='embedding_attempts',
        ),
        migrations.RemoveField(
            model_name='image',
            name='embedding_error',
        ),
        migrations.RemoveField(
            model_name='image',
            name='embedding_status',
        ),
        migrations.RemoveField(
            model_name='image',
            name='status_changed_at',
        ),
    ]
