"""The ports: what the domain needs from the outside world, as small async Protocols.

One module per port family (`pardot`, `bulk`, `queue`, `history`, `store`); every public name is
re-exported here, so `from domain.ports import X` names a port without knowing its module.
"""

from domain.ports.bulk import (
    BULK_BATCH_BYTES,
    BULK_BATCHES_PER_DAY,
    BULK_BATCHES_PER_IMPORT,
    BulkPardot,
    ExportRequest,
    ExportStatus,
    ImportColumn,
    ImportRowError,
    ImportStatus,
    export_time,
    pardot_time_in,
)
from domain.ports.forget import Person, PersonalData, Removed, SuppressionList
from domain.ports.history import DeliveryHistory, HistoryEntry
from domain.ports.ledger import ImportLedger, RecordedImport, RecordedRow, ledger_digest
from domain.ports.pardot import (
    BATCH_LIMIT,
    QUERY_LIMIT,
    PardotRepository,
    PardotSlots,
    ProspectPage,
    ProspectQuery,
    ProspectWrite,
    TokenProvider,
)
from domain.ports.queue import (
    PURGEABLE,
    SETTLED,
    STATES,
    EventQueue,
    QueuedEvent,
    QueueFull,
    SettledState,
    Settlement,
    message_id_of,
    ordering_key_of,
)
from domain.ports.store import (
    SLOT_BUCKET_SECONDS,
    ApiCallCounts,
    FieldStamp,
    IndexState,
    ProspectIndex,
    ProspectStore,
    SlotBusyLog,
)

__all__ = [
    "BATCH_LIMIT",
    "BULK_BATCHES_PER_DAY",
    "BULK_BATCHES_PER_IMPORT",
    "BULK_BATCH_BYTES",
    "PURGEABLE",
    "QUERY_LIMIT",
    "SETTLED",
    "SLOT_BUCKET_SECONDS",
    "STATES",
    "ApiCallCounts",
    "BulkPardot",
    "DeliveryHistory",
    "EventQueue",
    "ExportRequest",
    "ExportStatus",
    "FieldStamp",
    "HistoryEntry",
    "ImportColumn",
    "ImportLedger",
    "ImportRowError",
    "ImportStatus",
    "IndexState",
    "PardotRepository",
    "PardotSlots",
    "Person",
    "PersonalData",
    "ProspectIndex",
    "ProspectPage",
    "ProspectQuery",
    "ProspectStore",
    "ProspectWrite",
    "QueueFull",
    "QueuedEvent",
    "RecordedImport",
    "RecordedRow",
    "Removed",
    "SettledState",
    "Settlement",
    "SlotBusyLog",
    "SuppressionList",
    "TokenProvider",
    "export_time",
    "ledger_digest",
    "message_id_of",
    "ordering_key_of",
    "pardot_time_in",
]
