"""Business logic, one subpackage per capability; nothing here knows HTTP or FastAPI.

runtime     the task engine: claims, leases and every fenced write, the context a kind
            sees, upkeep, the state machine, the kinds registry, the event bus
files       bytes and their rows: the ByteStore (local directory or S3), tus uploads,
            downloads' file access, sweeper
csv_import  kind ``import_csv``: params, scan, source, one loader per database
csv_export  kind ``export_csv``: plan, one source per database
process     kind ``process``: a long process of N steps
owners      API keys, per-owner limits, the data namespaces of imported tables
paging      keyset paging shared by the task and file lists
"""
