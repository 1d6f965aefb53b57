"""Tables and indexes given as data, and the DDL each backend is given for them.

The text is laid out as sqlite-utils laid it out when it created the SQLite ledger's tables (the
quoting, the indentation, ``PRIMARY KEY`` before ``NOT NULL``): SQLite keeps a table's ``CREATE``
statement as written, and a ledger made by this build must read, in ``sqlite_master``, exactly as
one made by the builds before it. PostgreSQL takes the same text with its own column types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .dialect import Dialect

__all__ = [
    "Column", "Table", "add_column", "create_index", "create_table", "drop_index", "index_name", "integer", "real", "text",
]

ColumnType = Literal["text", "integer", "real", "serial"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    not_null: bool = False
    default: str | None = None
    """An SQL literal (``''``, ``0``)."""

    def ddl(self, dialect: Dialect, *, key: bool = False) -> str:
        spelled: str = getattr(dialect, self.type)
        return (f'"{self.name}" {spelled}' + (" PRIMARY KEY" if key else "") + (" NOT NULL" if self.not_null else "")
                + (f" DEFAULT {self.default}" if self.default is not None else ""))


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    without_rowid: bool = False
    """Keyed by its primary key alone where the backend can say so (``Dialect.without_rowid``)."""

    def with_name(self, name: str) -> Table:
        return Table(name, self.columns, self.key, self.without_rowid)


def text(name: str, *, not_null: bool = False, default: str | None = None) -> Column:
    return Column(name, "text", not_null, default)


def integer(name: str, *, not_null: bool = False, default: str | None = None) -> Column:
    return Column(name, "integer", not_null, default)


def real(name: str) -> Column:
    return Column(name, "real")


def create_table(table: Table, dialect: Dialect, *, if_not_exists: bool = False) -> str:
    single = table.key[0] if len(table.key) == 1 else None
    lines = [c.ddl(dialect, key=c.name == single) for c in table.columns]
    if single is None:
        lines.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in table.key) + ")")
    suffix = " WITHOUT ROWID" if table.without_rowid and dialect.without_rowid else ""
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return f'{create} "{table.name}" (\n   ' + ",\n   ".join(lines) + "\n)" + suffix


def index_name(table: str, columns: tuple[str, ...]) -> str:
    """The name sqlite-utils gave an index (and the PostgreSQL files after it): ``idx_<table>_<columns>``."""
    return f"idx_{table}_{'_'.join(columns)}"


def create_index(table: str, *columns: str) -> str:
    listed = ", ".join(f'"{c}"' for c in columns)
    return f'CREATE INDEX "{index_name(table, columns)}"\n    ON "{table}" ({listed})'


def drop_index(name: str) -> str:
    return f'DROP INDEX IF EXISTS "{name}"'


def add_column(table: str, column: Column, dialect: Dialect) -> str:
    return f'ALTER TABLE "{table}" ADD COLUMN {column.ddl(dialect)};'
