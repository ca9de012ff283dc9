import pgvector.django.halfvec
import pgvector.django.indexes
from django.db import migrations


class Migration(migrations.Migration):
    """Store vectors as halfvec(512) and rebuild the HNSW index for it (see docs/benchmarks.md)."""

    dependencies = [
        ("similarity", "0001_initial"),
    ]

    operations = [
        # The old index's operator class does not fit the new type: drop it first.
        migrations.RemoveIndex(model_name="embedding", name="similarity_embedding_hnsw"),
        migrations.AlterField(
            model_name="embedding",
            name="vector",
            field=pgvector.django.halfvec.HalfVectorField(dimensions=512),
        ),
        migrations.AddIndex(
            model_name="embedding",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=128,
                fields=["vector"],
                m=16,
                name="similarity_embedding_hnsw",
                opclasses=["halfvec_cosine_ops"],
            ),
        ),
    ]
