"""Source connectors: each lists documents together with who may read them."""

from connectors.base import Connector, Listing
from connectors.filesystem import FilesystemConnector

__all__ = ["Connector", "FilesystemConnector", "Listing"]
