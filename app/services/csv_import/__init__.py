"""Kind ``import_csv``: a CSV file into a table, at COPY speed, pausable and exactly once."""
