"""The Python SDK: ``Client`` and ``AsyncClient`` (httpx), one method per route."""

from open_autoglm.client.async_client import AsyncClient
from open_autoglm.client.sync_client import Client

__all__ = ["AsyncClient", "Client"]
