"""Schemathesis hooks (named in tests/schemathesis.toml): tus bodies are plain bytes."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
