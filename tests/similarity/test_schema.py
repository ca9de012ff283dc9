"""The database really has pgvector and an HNSW cosine index, read from the catalog."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_vector_extension_is_installed():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    assert row is not None, "the vector extension is missing"
    major, minor = (int(part) for part in row[0].split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_embedding_index_is_hnsw_with_cosine_ops():
    # halfvec (half-precision vector) storage was chosen by the benchmarks; its cosine
    # operator class is halfvec_cosine_ops.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT am.amname, opc.opcname, pg_get_indexdef(idx.indexrelid)
            FROM pg_index idx
            JOIN pg_class tbl ON tbl.oid = idx.indrelid
            JOIN pg_class ind ON ind.oid = idx.indexrelid
            JOIN pg_am am ON am.oid = ind.relam
            JOIN pg_opclass opc ON opc.oid = idx.indclass[0]
            WHERE tbl.relname = 'similarity_embedding' AND am.amname = 'hnsw'
            """
        )
        rows = cursor.fetchall()
    assert len(rows) == 1, rows
    access_method, operator_class, definition = rows[0]
    assert operator_class == "halfvec_cosine_ops"
    assert "USING hnsw (vector halfvec_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='128'" in definition


def test_vector_column_has_512_dimensions():
    # Each vector is stored in line (about 1 KB), not moved out to TOAST.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname = 'similarity_embedding' AND a.attname = 'vector'
            """
        )
        assert cursor.fetchone()[0] == "halfvec(512)"
