"""The DuckDB store: its schema, connections, result files and every SQL statement of the lab.

    db        connections (short-lived, retried while another process holds the lock), schema, the lab's marker
              (whose file it is), errors
    owner     who runs a run or a study (host, pid, process start) and whether that process still lives
    results   a run's result files (written by runs, never the store) and `ingest`, which copies them in
    queries   every other read and update, by what it answers
    owner     who runs a run (host, pid, process start) and its heartbeat: a run whose process is gone is
              interrupted, never "running" forever

Nothing outside this package opens a connection or writes SQL. Imports only engine.settings.
"""
from engine.store import queries
from engine.store.db import (PROCESS_LOCK, SCHEMA, SCHEMA_VERSION, STORE_FORMAT, DatabaseError, METHOD_TABLES,
                             METRIC_COLUMNS, RUN_TABLES, ResultFileError, StoreBusy, StoreDamaged, StoreError, StoreFull,
                             check_location, classify, connect, query, verify, version)
from engine.store.results import (ingest, method_dirname, method_summary, write_json_atomic, write_method_files,
                                  write_run_file, write_run_table)

__all__ = ["PROCESS_LOCK", "SCHEMA", "SCHEMA_VERSION", "STORE_FORMAT", "DatabaseError", "METHOD_TABLES",
           "METRIC_COLUMNS", "RUN_TABLES", "ResultFileError", "StoreBusy", "StoreDamaged", "StoreError", "StoreFull",
           "check_location", "classify", "connect", "query", "verify", "version", "ingest",
           "method_dirname", "method_summary", "write_json_atomic", "write_method_files", "write_run_file",
           "write_run_table", "queries"]
