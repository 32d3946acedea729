"""Files: where bytes live, the ``files`` rows, tus uploads, download access and housekeeping."""
