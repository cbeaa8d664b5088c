"""The SDK's version (one place; the package and the client's User-Agent read it)."""

VERSION = "2.0.0.dev0"
