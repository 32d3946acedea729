"""Kind ``export_csv``: a table into a CSV file, in keyset pages, pausable and byte-identical."""
