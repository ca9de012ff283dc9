"""The foreign keys to gallery_image cascade in PostgreSQL itself.

Django deletes an image's click rows first and the image after, in one transaction; a flush
(clicks.services.events_flush) that commits a row for that image in between would make the
image's deletion fail its foreign key check. With ON DELETE CASCADE in the database, the
rows the flush added go with the image.
"""

from django.db import migrations

CASCADE = """
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN
        SELECT c.conname, c.conrelid::regclass AS tbl, a.attname
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.contype = 'f' AND c.confrelid = 'gallery_image'::regclass
          AND c.conrelid IN ('clicks_pairday'::regclass, 'clicks_pairevidence'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
        EXECUTE format(
            'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES gallery_image (id) '
            'ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            fk.tbl, fk.conname, fk.attname
        );
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("clicks", "0001_pair_counts_and_evidence"), ("gallery", "0006_rendition_kinds_and_formats")]

    operations = [migrations.RunSQL(CASCADE, reverse_sql=migrations.RunSQL.noop)]
