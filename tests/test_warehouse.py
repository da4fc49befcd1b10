import duckdb
import pandas as pd
import pytest

from ehr_assets.warehouse import atomic_dir, ident, read_partition, replace_partition


def test_replace_partition_swaps_one_partition_only(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    a = pd.DataFrame({"cohort": ["a"] * 3, "x": [1, 2, 3]})
    b = pd.DataFrame({"cohort": ["b"] * 2, "x": [10, 20]})
    assert replace_partition(conn, "t", a, {"cohort": "a"}) == 3
    replace_partition(conn, "t", b, {"cohort": "b"})
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [7]}), {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "a"})["x"].tolist() == [7]
    assert read_partition(conn, "t", {"cohort": "b"}, order_by=["x"])["x"].tolist() == [10, 20]
    # a new column appears without losing the other partition
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [8], "y": ["new"]}), {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "b"})["y"].isna().all()


def test_failed_write_keeps_previous_partition(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [1]}), {"cohort": "a"})
    bad = pd.DataFrame({"cohort": ["a"], "x": ["not-an-int"]})
    with pytest.raises(duckdb.Error):
        replace_partition(conn, "t", bad, {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "a"})["x"].tolist() == [1]
    with pytest.raises(ValueError, match="rows outside partition"):
        replace_partition(conn, "t", pd.DataFrame({"cohort": ["b"], "x": [1]}), {"cohort": "a"})


def test_identifiers_are_validated_and_missing_table_named(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        ident('t"; DROP TABLE x; --')
    with pytest.raises(LookupError, match="materialize asset 'nope' first"):
        read_partition(conn, "nope", {"cohort": "a"})


def test_atomic_dir_replaces_on_success_and_keeps_old_on_failure(tmp_path):
    final = tmp_path / "art" / "msk"
    with atomic_dir(final) as d:
        (d / "f.txt").write_text("v1")
    assert (final / "f.txt").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "f.txt").write_text("half")
            raise RuntimeError("killed")
    assert (final / "f.txt").read_text() == "v1"
    assert [p.name for p in final.parent.iterdir()] == ["msk"]  # no temporary left behind
    with atomic_dir(final) as d:
        (d / "g.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["g.txt"]


def test_a_failed_write_raises_the_original_error_and_keeps_the_connection_usable():
    import duckdb
    import numpy as np
    import pandas as pd
    import pytest

    from ehr_assets.warehouse import replace_partition

    c = duckdb.connect()
    replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[1, 2]]}), {"cohort": "a"})
    with pytest.raises(duckdb.ConversionException):  # not a masking "transaction aborted" error
        replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[np.int32(1)]]}), {"cohort": "a"})
    assert c.execute("SELECT x FROM t").fetchall() == [([1, 2],)]
    replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[3]]}), {"cohort": "a"})
    assert c.execute("SELECT x FROM t").fetchall() == [([3],)]
