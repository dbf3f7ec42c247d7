"""Result rows to the ports' dataclasses, for every SQL repository.

The stored columns carry the dataclass fields' names (the schema was written from them), so one
reflective step maps a row; a field whose stored form differs (JSON text) is passed ready.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Record = TypeVar("Record", bound=DataclassInstance)


@cache
def _field_names(record: type[DataclassInstance]) -> tuple[str, ...]:
    # Ledger pages map many rows; the field list of a class is read once.
    return tuple(f.name for f in fields(record))


def from_row(record: type[Record], row: Any, **converted: Any) -> Record:
    """`record` with every field read from the row's column of that name, except those given
    in `converted` (already turned from their stored form into the field's)."""
    values = {name: getattr(row, name) for name in _field_names(record) if name not in converted}
    return record(**values, **converted)
