"""Each daily count names the comparison whose list it was in: "interleaved", "ab", or "single"
(a list asked for by name), so interleaving is measured on interleaved lists only.

Rows counted before are "single": which comparison made them was not recorded. The constraint
the flush's upsert names is replaced in the same transaction, so a flush waits for the
migration rather than finding no constraint.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('clicks', '0002_cascade_in_the_database'),
        ('gallery', '0006_rendition_kinds_and_formats'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='pairday',
            options={'verbose_name': 'daily counts of a pair', 'verbose_name_plural': "visitors' choices"},
        ),
        migrations.RemoveConstraint(
            model_name='pairday',
            name='clicks_pairday_unique',
        ),
        migrations.AddField(
            model_name='pairday',
            name='comparison',
            field=models.CharField(choices=[('interleaved', 'team-draft interleaving of the two lists'), ('ab', 'one list or the other per source image (A/B)'), ('single', 'one list, asked for by name')], default='single', max_length=11),
        ),
        migrations.AddConstraint(
            model_name='pairday',
            constraint=models.UniqueConstraint(fields=('source', 'target', 'comparison', 'variant', 'position', 'day'), name='clicks_pairday_unique'),
        ),
    ]
