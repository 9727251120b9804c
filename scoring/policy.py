"""Which model descriptors a data type accepts: newer versions, an explicit rollback, or the
promotion of the version in rollout."""

from __future__ import annotations

from collections.abc import Mapping

from contract import scoring_pb2 as pb

DescriptorId = tuple[str, int, int, int]


def descriptor_id(d: pb.ModelDescriptor) -> DescriptorId:
    """Identifies one announcement: the same version rolled back to later is a new one."""
    return (d.name, d.version, d.action, d.publish_time_ms)


def accept(current: pb.ModelDescriptor | None, new: pb.ModelDescriptor, sequenced: bool = False) -> str | None:
    """None if `new` replaces `current` for its data type, else the reason it does not.

    `sequenced` (the job trusts keys, so descriptors are signed whole): `new` must carry a
    sequence above the last accepted one's, the data type's high-water mark, so that no
    signed descriptor, a ROLLBACK or PROMOTE included, can be replayed."""
    if current is None:
        return None
    if descriptor_id(new) == descriptor_id(current):
        return f"{new.name} v{new.version} was already accepted (a duplicate message)"
    if sequenced and new.sequence <= current.sequence:
        return (
            f"{new.name} v{new.version} ({pb.ModelDescriptor.Action.Name(new.action)}) has sequence "
            f"{new.sequence}, not above {current.sequence} of the last descriptor accepted for "
            f"'{new.data_type}': a replayed or out-of-date statement. Publish it again with "
            "model-store, which gives it a new sequence"
        )
    if new.action == pb.ModelDescriptor.ROLLBACK:
        return None
    if new.action == pb.ModelDescriptor.PROMOTE and (new.name, new.version) == (current.name, current.version):
        return None  # ends the rollout of the version accepted last
    if new.name == current.name and new.version <= current.version:
        return (
            f"{new.name} v{new.version} is not newer than v{current.version} already accepted "
            f"for '{new.data_type}'; to go back to it, publish it with action ROLLBACK"
        )
    return None


def over_capacity(accepted: Mapping[str, pb.ModelDescriptor], new: pb.ModelDescriptor, max_data_types: int,
                  max_inline_bytes: int) -> str | None:
    """Why taking `new` would grow the broadcast state past its bounds (every subtask keeps all
    of it), or None: at most `max_data_types` data types, and inline artifacts of at most
    `max_inline_bytes` in all."""
    if new.data_type not in accepted and len(accepted) >= max_data_types:
        return (f"the job already serves {len(accepted)} data types, its limit (--max-data-types): "
                f"'{new.data_type}' is not taken")
    inline = sum(len(d.inline_bytes) for k, d in accepted.items() if k != new.data_type) + len(new.inline_bytes)
    if inline > max_inline_bytes:
        return (f"its {len(new.inline_bytes)} inline bytes would bring the descriptors the job keeps to "
                f"{inline} inline bytes, over --max-inline-total-bytes {max_inline_bytes}: publish it "
                "by location (model-store publish --inline-max-bytes 0)")
    return None


def without_inline_bytes(d: pb.ModelDescriptor) -> pb.ModelDescriptor:
    """A copy fit for logs and events."""
    copy = pb.ModelDescriptor()
    copy.CopyFrom(d)
    copy.ClearField("inline_bytes")
    return copy
