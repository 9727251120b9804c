"""Reading a data record the job was given: the record, or why it goes to the dead letters.

Records reach the scoring operator keyed by the data type the JVM read from their bytes
(`jvm/keying`: `DataTypeKey`, "" when it could not read one). Here the whole record is
parsed, once, and checked against that key.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from contract import scoring_pb2 as pb
from contract.json_records import JsonRecordError, decode_record

KEPT_OF_OVERSIZED = 1024  # bytes of an oversized record its dead letter keeps


class UnreadableRecord(ValueError):
    """Why a record cannot be scored; `original` is what its dead letter keeps."""

    def __init__(self, reason: str, original: bytes, record: pb.DataRecord | None = None) -> None:
        super().__init__(reason)
        self.original = original
        self.record = record


def read_record(raw: bytes, key: str, max_record_bytes: int, record_format: str = "auto") -> tuple[pb.DataRecord, bool]:
    """The record, and whether it came as JSON. Raises UnreadableRecord."""
    if len(raw) > max_record_bytes:
        raise UnreadableRecord(
            f"record of {len(raw)} bytes is over the {max_record_bytes}-byte limit "
            f"(only its first {KEPT_OF_OVERSIZED // 1024} KiB is kept here)", raw[:KEPT_OF_OVERSIZED])
    try:
        record, as_json = decode_record(raw, record_format)
    except DecodeError as err:
        raise UnreadableRecord(f"{len(raw)} bytes are not a DataRecord protobuf: {err}", raw) from err
    except JsonRecordError as err:
        named = pb.DataRecord(record_id=err.record_id, data_type=err.data_type) if err.record_id else None
        raise UnreadableRecord(f"bad JSON record: {err}", raw, named) from err
    except Exception as err:  # noqa: BLE001 - no record may stop the job: a reader's bug is a dead letter
        raise UnreadableRecord(f"{len(raw)} bytes could not be read ({type(err).__name__}: {err}); "
                               "please report this record", raw) from err
    missing = [f for f in ("record_id", "data_type") if not getattr(record, f)]
    if missing:
        raise UnreadableRecord(f"record has no {' and no '.join(missing)}", raw, record)
    if record.data_type != key:
        raise UnreadableRecord(
            f"the record's data_type {record.data_type!r} is not the one the job keyed it by "
            f"({key!r}, read on the JVM); please report this record", raw, record)
    return record, as_json
