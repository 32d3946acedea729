"""Kind ``import_csv``: a CSV file into a table, at COPY speed, pausable and exactly once.

Its modules::

    kind           the task kind: plan, stage, load batch by batch, publish, or discard
    params         what a caller may ask for, checked before a task exists
    source         the input and its by-products: the file, its plan and type sample, its batches,
                   the reject file
    dialect        delimiter, quote and header sniffed from the head of the file
    preview        the file as an import would read it, without importing
    scan           CSV bytes: record boundaries, header names, type inference, values
    loader         the Loader protocol and the ImportCheckpoint both loaders commit with
    loader_pg      PostgreSQL: COPY inside the checkpoint's transaction
    loader_sqlite  SQLite: batches and their own state in the owner's tables file
    errors         ImportFailed, the failure that retrying cannot cure
"""
