"""Each pair's links: the pictures visitors' choices join to both its ends (clicks.evidence)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('clicks', '0003_comparison_of_each_list'),
    ]

    operations = [
        migrations.AddField(
            model_name='pairevidence',
            name='links',
            field=models.PositiveIntegerField(default=0),
        ),
    ]
