"""Tables printed whole at any width: no cell is ever cut.

rich fits a table that is too wide by cutting its cells (3.352e-06 shows as `3.352…`). Here a
table keeps every character. In a pipe or a log it has no width limit. On a terminal it takes
the first layout that fits, in this order: every column with its rows on one line, then on
two (cells wrap between words, never inside one), in the boxed style, then compact (no
borders); the same leaving out the caller's droppable columns one by one, which a line names;
then rows of as many lines as it takes; and last each row as `header: value` lines.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

NO_LIMIT = 100_000
HEADER_LINES = 3  # a header may wrap to this many lines while its cells take one or two
COMPACT = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False,
           "collapse_padding": True}  # fmt: skip


def print_table(table: Table, out: Console, droppable: Sequence[str] = (),
                hint: str = "") -> None:  # fmt: skip
    """`table` with every cell whole. `droppable`: headers that may be left out on a narrow
    terminal, first first; `hint`: where else those columns are, e.g. " or use --tsv"."""
    if not out.is_terminal:  # a pipe or a CI log: the whole table, however wide
        out.print(Unbounded(table), crop=False)
        return
    fitted, left_out = fit_table(out, table, out.width, droppable)
    out.print(fitted)
    if left_out:
        out.print(f"columns left out at {out.width} columns: {', '.join(left_out)}; widen the "
                  f"terminal{hint}", highlight=False, markup=False)  # fmt: skip


class Unbounded:
    """A renderable laid out as wide as it wants, whatever the console's width."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = Measurement.get(console, options.update_width(NO_LIMIT), self.renderable).maximum
        yield from console.render(self.renderable, options.update_width(width))


def fit_table(out: Console, table: Table, width: int,
              droppable: Sequence[str] = ()) -> tuple[RenderableType, list[str]]:  # fmt: skip
    """The table laid out within `width` with no cell cut, and the headers left out."""
    columns = Columns(out, table)
    headers = [plain(out, c.header) for c in table.columns]
    order = [h for h in droppable if h in headers]
    for n, lines, style in _layouts(len(order)):
        keep = [i for i, h in enumerate(headers) if h not in order[:n]]
        fitted = columns.fit(keep, width - _overhead(out, table, keep, style), lines)
        if fitted is not None:
            return _set_widths(_copy(table, keep, style), *fitted), order[:n]
    return stacked(out, table), []


def _layouts(n_droppable: int) -> Iterator[tuple[int, int | None, dict[str, Any]]]:
    """(columns left out, most lines a row may take or None: any, style), best first."""
    for n in range(n_droppable + 1):
        for lines, style in itertools.product((1, 2), ({}, COMPACT)):
            yield n, lines, style
    for n in range(n_droppable + 1):
        for style in ({}, COMPACT):
            yield n, None, style


class Columns:
    """Each column's widths and how many lines its cells wrap to at a width (memoised)."""

    def __init__(self, out: Console, table: Table) -> None:
        self.out = out
        self.header = [_text(out, c.header) for c in table.columns]
        texts = [[_text(out, cell) for cell in c.cells] for c in table.columns]
        self.cells = [list({t.plain: t for t in ts}.values()) for ts in texts]  # wrap each once
        self.lo = [max(_longest_word(t) for t in [h, *cells])
                   for h, cells in zip(self.header, self.cells, strict=True)]  # fmt: skip
        self.hi = [max(_longest_line(t) for t in [h, *cells])
                   for h, cells in zip(self.header, self.cells, strict=True)]  # fmt: skip
        self._memo: dict[tuple[int, int], tuple[int, int]] = {}

    def fit(self, keep: list[int], room: int,
            most_lines: int | None) -> tuple[list[int] | None, int] | None:  # fmt: skip
        """(widths or None: as they are, lines a row takes) for the columns `keep` within
        `room`, rows of the fewest lines up to `most_lines` (None: any); None if none fits."""
        if sum(self.hi[i] for i in keep) <= room:
            return None, 1
        for lines in itertools.count(1) if most_lines is None else range(1, most_lines + 1):
            widths = [self._narrowest(i, lines) for i in keep]
            if sum(widths) <= room:
                return self._widen(keep, widths, room - sum(widths), lines), lines
            if widths == [self.lo[i] for i in keep]:
                return None
        return None

    def _widen(self, keep: list[int], widths: list[int], spare: int, lines: int) -> list[int]:
        """The spare room to the columns that then wrap to fewer lines, cheapest first: an
        interval on one line rather than empty room beside the table."""
        for fewer in range(lines - 1, 0, -1):
            wants = sorted((self._narrowest(i, fewer) - widths[j], j) for j, i in enumerate(keep))
            for more, j in wants:
                if 0 < more <= spare:
                    widths[j], spare = widths[j] + more, spare - more
        return widths

    def _narrowest(self, i: int, lines: int) -> int:
        """Column i's narrowest width with cells of at most `lines` lines and its header of at
        most HEADER_LINES (or `lines` if more)."""
        for w in range(self.lo[i], self.hi[i]):
            cells, header = self._lines(i, w)
            if cells <= lines and header <= max(lines, HEADER_LINES):
                return w
        return self.hi[i]

    def _lines(self, i: int, width: int) -> tuple[int, int]:
        if (i, width) not in self._memo:
            wrap = [len(t.wrap(self.out, width)) for t in self.cells[i]]
            self._memo[i, width] = max(wrap, default=1), len(self.header[i].wrap(self.out, width))
        return self._memo[i, width]


def _overhead(out: Console, table: Table, keep: list[int], style: dict[str, Any]) -> int:
    """Borders and padding of the columns `keep` in `style`: the width of their headers alone
    as a table, less the headers."""
    heads = _copy(table, keep, style, rows=False)
    natural = Measurement.get(out, out.options.update_width(NO_LIMIT), heads).maximum
    return natural - sum(_text(out, c.header).cell_len for c in heads.columns)


def _set_widths(table: Table, widths: list[int] | None, lines: int) -> Table:
    for column, w in zip(table.columns, widths or [None] * len(table.columns), strict=True):
        column.width = w
    table.show_lines = lines > 1  # a row of several lines is told from the next
    return table


def _copy(table: Table, keep: list[int], style: dict[str, Any], rows: bool = True) -> Table:
    """A new table of the columns `keep` (headers, justification and cells as they are; the
    default styles), in `style`."""
    t = Table(title=table.title, caption=table.caption, **style)
    columns = [table.columns[i] for i in keep]
    for c in columns:
        t.add_column(c.header, justify=c.justify, style=c.style)
    for cells in zip(*(list(c.cells) for c in columns), strict=True) if rows else ():
        t.add_row(*cells)
    return t


def stacked(out: Console, table: Table) -> Group:
    """Each row as `header: value` lines, for a width where no column layout fits."""
    headers = [plain(out, c.header) for c in table.columns]
    title = [Text(plain(out, table.title), style="bold")] if table.title else []
    lines: list[RenderableType] = list(title)
    for cells in zip(*(list(c.cells) for c in table.columns), strict=True):
        lines.append(Text(""))
        lines += [Text(f"{h}: {plain(out, c)}") for h, c in zip(headers, cells, strict=True)]
    return Group(*lines)


def _text(out: Console, cell: Any) -> Text:
    """A header or cell as Text (a str is rich markup, as a table reads it)."""
    return cell if isinstance(cell, Text) else out.render_str(str(cell))


def plain(out: Console, cell: Any) -> str:
    return _text(out, cell).plain


def _longest_word(text: Text) -> int:
    return max((cell_len(w) for w in text.plain.split()), default=0)


def _longest_line(text: Text) -> int:
    return max((cell_len(line) for line in text.plain.splitlines()), default=0)
