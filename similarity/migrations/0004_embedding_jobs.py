"""Embedding status moves from one set of columns on gallery.Image to a row per (image, model).

The schema, then the data: every image's status, error, attempts and timestamp become the row
of the model they were tracking, the configured one (workers embed with it, and
``embed_images --stale`` set an image back to pending for it). A ready image whose vectors
are all another model's (an upgrade under way) was ready for those: each stored vector is a
ready row of its own model. The columns are dropped by gallery's next migration.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def configured_identity(apps) -> str:
    """The model the status columns tracked: the configured one, else the one the site serves."""
    from similarity.weights import WeightsUnavailable, model_identity

    try:
        return model_identity()
    except WeightsUnavailable:
        # A weights file that is not on this host: its identity cannot be read, so the
        # statuses go to the model the pages serve (the one the vectors were made with).
        serving = apps.get_model("similarity", "ServingModel").objects.first()
        return serving.identity if serving else "unknown"


def statuses_copy(apps, schema_editor):
    Image = apps.get_model("gallery", "Image")
    Embedding = apps.get_model("similarity", "Embedding")
    EmbeddingJob = apps.get_model("similarity", "EmbeddingJob")
    identity = configured_identity(apps)
    with_own_vector = set(Embedding.objects.filter(model_identity=identity).values_list("image_id", flat=True))
    with_any_vector = set(Embedding.objects.values_list("image_id", flat=True))
    rows = []
    columns = ("pk", "embedding_status", "embedding_error", "embedding_attempts", "status_changed_at")
    for image_id, status, error, attempts, changed_at in Image.objects.values_list(*columns).iterator(chunk_size=5000):
        if status == "ready" and image_id not in with_own_vector and image_id in with_any_vector:
            continue  # ready for another model: its vectors' rows say so (below)
        if status == "ready" and image_id not in with_any_vector:
            status = "pending"  # "ready" without a vector: computed again rather than lost
        rows.append(
            EmbeddingJob(
                image_id=image_id, model_identity=identity, status=status, error=error,
                attempts=attempts, status_changed_at=changed_at,
            )
        )
        if len(rows) >= 5000:
            EmbeddingJob.objects.bulk_create(rows)
            rows = []
    EmbeddingJob.objects.bulk_create(rows)
    # Every stored vector is a finished embedding of its model (the rows above win for the
    # configured model: an image set pending to be recomputed stays pending).
    vectors = Embedding.objects.values_list("image_id", "model_identity", "created_at")
    EmbeddingJob.objects.bulk_create(
        [
            EmbeddingJob(image_id=image_id, model_identity=model, status="ready", status_changed_at=created_at)
            for image_id, model, created_at in vectors.iterator(chunk_size=5000)
        ],
        batch_size=5000,
        ignore_conflicts=True,
    )


def statuses_restore(apps, schema_editor):
    """Back to the columns: each image's row for the configured model (else any ready one)."""
    Image = apps.get_model("gallery", "Image")
    EmbeddingJob = apps.get_model("similarity", "EmbeddingJob")
    identity = configured_identity(apps)
    # Ready rows of other models first, so the configured model's row, where there is one, wins.
    for jobs in (EmbeddingJob.objects.filter(status="ready").exclude(model_identity=identity),
                 EmbeddingJob.objects.filter(model_identity=identity)):
        for job in jobs.iterator(chunk_size=5000):
            Image.objects.filter(pk=job.image_id).update(
                embedding_status=job.status, embedding_error=job.error,
                embedding_attempts=job.attempts, status_changed_at=job.status_changed_at,
            )


class Migration(migrations.Migration):

    dependencies = [
        ('gallery', '0004_renditions_storage'),
        ('similarity', '0003_serving_model'),
    ]

    operations = [
        migrations.CreateModel(
            name='EmbeddingJob',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model_identity', models.CharField(max_length=100)),
                ('status', models.CharField(choices=[('pending', 'pending'), ('processing', 'processing'), ('ready', 'ready'), ('failed', 'failed')], default='pending', max_length=10)),
                ('error', models.TextField(blank=True, help_text='Why the embedding failed, when it did.')),
                ('attempts', models.PositiveSmallIntegerField(default=0)),
                ('status_changed_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='embedding_jobs', to='gallery.image')),
            ],
            options={
                'indexes': [models.Index(fields=['model_identity', 'status', 'status_changed_at'], name='similarity_job_queue')],
                'constraints': [models.UniqueConstraint(fields=('image', 'model_identity'), name='similarity_embeddingjob_unique_per_model')],
            },
        ),
        migrations.RunPython(statuses_copy, statuses_restore),
    ]
