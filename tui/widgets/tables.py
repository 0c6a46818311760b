"""Tables that keep their place: rows are replaced on every reload, and the cursor stays on
the row it was on (by key) when that row is still there."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class Table(DataTable[Any]):
    """A DataTable of rows keyed by id, a row at a time under the cursor."""

    def __init__(self, *columns: str | tuple[str, int], id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns = columns

    def on_mount(self) -> None:
        for column in self._columns:
            if isinstance(column, tuple):
                self.add_column(column[0], width=column[1], key=column[0])
            else:
                self.add_column(column, key=column)

    def refill(self, rows: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Replace every row; the cursor stays on its row if it is still there."""
        keep = self.current_key()
        scroll_y = self.scroll_y
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(keep), animate=False, scroll=False)
            except RowDoesNotExist:
                pass
        self.scroll_to(y=scroll_y, animate=False, immediate=True)

    def current_key(self) -> str | None:
        """The key of the row under the cursor, if there is one."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (RowDoesNotExist, IndexError, KeyError):  # the cursor past the rows after they changed
            return None
