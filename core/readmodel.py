"""Read models derived from stored row types: a read model names the row type it shows (ROW) and takes its
fields from it by name, so an entity has one shape in the code and the API cannot drift from the table.
tests/test_architecture.py checks every read model's fields against its row type (DERIVED fields excepted)."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict


class RowRead(BaseModel):
    """Base of the read models that show one stored row (see the module docstring)."""

    model_config = ConfigDict(from_attributes=True)

    ROW: ClassVar[type]
    # Fields computed for the reader rather than copied from the row (their names may still exist on it).
    DERIVED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def of(cls, row: Any) -> Self:
        """The read model of one row."""
        return cls.model_validate(row)
