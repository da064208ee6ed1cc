"""Sources: database tables and queries (full or incremental by a watermark) and message
streams (NATS JetStream, Redis Streams, MQTT, RabbitMQ) ingested as dataset versions, each
committed with the source's position in one transaction (docs/sources.md).
"""

from civicml.sources.schemas import (
    DatabaseConfig,
    RunStatus,
    Source,
    SourceCreate,
    SourceKind,
    SourceRun,
    SourceStatus,
    SourceUpdate,
    StreamConfig,
)
from civicml.sources.service import SourceService
from civicml.sources.streams import Message, StreamSource

__all__ = [
    "DatabaseConfig",
    "Message",
    "RunStatus",
    "Source",
    "SourceCreate",
    "SourceKind",
    "SourceRun",
    "SourceService",
    "SourceStatus",
    "SourceUpdate",
    "StreamConfig",
    "StreamSource",
]
