"""Kind ``process``: a long server-side process of N checkpointed steps."""
