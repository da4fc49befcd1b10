"""Loaded by a test subprocess (PYTHONPATH=tests/e2e/crash_hook): SIGKILLs the process at one exact point, named by
``EHR_CRASH_AT``, so that a crash test is deterministic. No effect without the variable.

* ``commit:<table>``: inside the DuckDB transaction that replaces a partition of ``<table>``, just before COMMIT;
* ``step:<n>``: while step checkpoint ``n`` is half written (its weights in ``.step_<n>.tmp``, no trainer state);
* ``embeddings:<asset>``: while the embeddings folder of ``<asset>`` is half written (tensor file, no index).
"""

import os
import signal

WHERE = os.environ.get("EHR_CRASH_AT", "")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


if WHERE.startswith("commit:"):
    import ehr_assets.warehouse as wh

    table = WHERE.split(":", 1)[1]
    real = wh.replace_partitions

    class _Conn:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args, **kw):
            if sql == "COMMIT":
                _die()
            return self._conn.execute(sql, *args, **kw)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    def replace_partitions(conn, writes, *args, **kw):
        hit = any(w[0] == table for w in writes) if not isinstance(writes, dict) else table in writes
        return real(_Conn(conn) if hit else conn, writes, *args, **kw)

    wh.replace_partitions = replace_partitions

elif WHERE.startswith("step:"):
    import safetensors.torch as st

    tmp = f".step_{int(WHERE.split(':')[1]):06d}.tmp"
    real_save = st.save_file

    def save_file(tensors, filename, *args, **kw):
        if filename.endswith("trainer_state.safetensors") and os.path.basename(os.path.dirname(filename)) == tmp:
            _die()
        return real_save(tensors, filename, *args, **kw)

    st.save_file = save_file

elif WHERE.startswith("embeddings:"):
    import safetensors.numpy as sn

    asset = WHERE.split(":", 1)[1]
    real_np = sn.save_file

    def save_np(tensors, filename, *args, **kw):
        out = real_np(tensors, filename, *args, **kw)
        if f"/{asset}/" in str(filename):
            _die()
        return out

    sn.save_file = save_np
