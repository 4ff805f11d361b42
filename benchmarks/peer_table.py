"""Rows, the markdown table and the KL-vs-bpw plot of benchmarks/peers.py. Pure apart from `plot`
(matplotlib, imported there): tests build rows by hand and check the table and the plot's series."""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass


ORIGINAL = "original"  # the series of the uncompressed model's row


@dataclass(frozen=True)
class Row:
    """One measured (or failed) configuration. `series` names the plot line it belongs to (one per
    method and setting: "hqq g64", "caldera r64 row"); a row with `failure` set has no numbers."""

    method: str
    series: str
    bits: str
    group: str
    rank: str
    version: str
    bpw: float = math.nan
    ppl: float = math.nan
    ppl_ratio: float = math.nan
    kl: float = math.nan
    kl_lo: float = math.nan
    kl_hi: float = math.nan
    top1: float = math.nan
    seconds: float = math.nan
    failure: str = ""

    def __post_init__(self) -> None:
        if not self.failure and not all(math.isfinite(x) for x in (self.bpw, self.ppl, self.kl, self.top1)):
            raise ValueError(f"row {self.series} b{self.bits}: measured rows need finite bpw, ppl, KL and top-1 "
                             f"(got {self.bpw}, {self.ppl}, {self.kl}, {self.top1}); failed rows need a failure reason")
        if "\n" in self.failure or "|" in self.failure:
            raise ValueError("a failure reason must be one line without '|' (it is a table cell)")


HEADER = ("| method | bits | group | rank | bpw | ppl (× original) | KL nats/token (95%) | top-1 | compress s | version |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def format_row(row: Row) -> str:
    cells = [row.method, row.bits, row.group, row.rank]
    if row.failure:
        return "| " + " | ".join(cells + [f"not run: {row.failure}", "", "", "", "", row.version]) + " |"
    cells += [f"{row.bpw:.3f}", f"{row.ppl:.2f} (×{row.ppl_ratio:.3f})",
              f"{row.kl:.4f} ({row.kl_lo:.4f} .. {row.kl_hi:.4f})", f"{100 * row.top1:.1f}%",
              "-" if math.isnan(row.seconds) else f"{row.seconds:.0f}", row.version]
    return "| " + " | ".join(cells) + " |"


def format_table(rows: list[Row]) -> str:
    """Measured rows by ascending bpw, then the rows that could not run (with their reason)."""
    measured = sorted((r for r in rows if not r.failure), key=lambda r: (r.bpw, r.kl))
    failed = [r for r in rows if r.failure]
    return "\n".join([HEADER] + [format_row(r) for r in measured + failed])


ORIGINAL_METHOD = "original (fp32)"


def table_series(method: str, group: str, rank: str, version: str) -> str:
    """A plot series rebuilt from a printed row's cells: a peer's "hqq g64" / "gptq-eora g64 r64",
    calderalab's "caldera r64 row" (method words after the first, then a "[ray t1]" run tag, last:
    "caldera r16 row e8p"), a KL plan's "ldlq kl-plan": what peers.py names its rows."""
    if method == ORIGINAL_METHOD:
        return ORIGINAL
    if not version.startswith("calderalab"):
        return f"{method} g{group}" + ("" if rank == "-" else f" r{rank}")
    if method.startswith("ldlq kl-plan"):  # one line through every target bpw, named by the method alone
        return method
    method, _, tag = method.partition(" [")
    first, _, rest = method.partition(" ")
    name = f"{first}{'' if rank == '-' else f' r{rank}'} {group}{f' {rest}' if rest else ''}"
    return name + (f" [{tag}" if tag else "")


_PPL = re.compile(r"([\d.]+) \(×([\d.]+)\)")
_KL = re.compile(r"([\d.]+) \(([\d.]+) \.\. ([\d.]+)\)")


def parse_table(text: str) -> list[Row]:
    """The rows of the first table `format_table` printed in `text` (a README, a log): its inverse up
    to the printed precision, each row's series rebuilt by `table_series`. So the plot and the verdicts
    can be redrawn from a published table whose runs' caches are gone."""
    lines = [line.strip() for line in text.splitlines()]
    head = HEADER.splitlines()
    starts = [i for i in range(len(lines) - 1) if lines[i] == head[0] and lines[i + 1] == head[1]]
    if not starts:
        raise ValueError("no peer table in the text (its header row is: " + head[0] + ")")
    rows = []
    for n, line in enumerate(lines[starts[0] + 2:], start=starts[0] + 3):
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 10:
            raise ValueError(f"table line {n} has {len(cells)} cells, not 10: {line}")
        method, bits, group, rank, version = *cells[:4], cells[9]
        fields = dict(method=method, series=table_series(method, group, rank, version), bits=bits, group=group,
                      rank=rank, version=version)
        if cells[4].startswith("not run: "):
            rows.append(Row(failure=cells[4].removeprefix("not run: "), **fields))
            continue
        ppl, kl = _PPL.fullmatch(cells[5]), _KL.fullmatch(cells[6])
        if ppl is None or kl is None or not cells[7].endswith("%"):
            raise ValueError(f"table line {n}: cannot read perplexity, KL or top-1 in: {line}")
        rows.append(Row(bpw=float(cells[4]), ppl=float(ppl[1]), ppl_ratio=float(ppl[2]), kl=float(kl[1]),
                        kl_lo=float(kl[2]), kl_hi=float(kl[3]), top1=float(cells[7][:-1]) / 100,
                        seconds=math.nan if cells[8] == "-" else float(cells[8]), **fields))
    return rows


def series(rows: list[Row]) -> dict[str, list[tuple[float, float]]]:
    """Plot lines: series name → (bpw, KL) points sorted by bpw; failed rows and KL = 0 (the
    baseline, not drawable on a log axis) left out."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if not r.failure and r.kl > 0:
            lines.setdefault(r.series, []).append((r.bpw, r.kl))
    return {name: sorted(points) for name, points in sorted(lines.items())}


def best_below(rows: list[Row], bpw_limit: float, calderalab: bool) -> Row | None:
    """The lowest-KL measured row at bpw ≤ limit, among calderalab's rows or among the peers'."""
    pool = [r for r in rows if not r.failure and r.bpw <= bpw_limit and r.series != ORIGINAL
            and r.version.startswith("calderalab") == calderalab]
    return min(pool, key=lambda r: r.kl, default=None)


def leads(rows: list[Row]) -> list[str]:
    """Per measured peer row: calderalab's lowest-KL row at the same or lower bpw, and who wins.
    calderalab leads at a point when it beats that peer without using more bits and beyond the
    noise: its KL interval lies wholly below the peer's (95% window-bootstrap intervals; rows are
    scored on the same windows, so this is conservative). A lower KL whose interval overlaps the
    peer's is "no lead shown"."""
    lines = []
    # the original is left out by name, not by KL = 0: a peer that scores 0 must win its verdict
    for peer in sorted((r for r in rows if not r.failure and r.series != ORIGINAL and not r.version.startswith("calderalab")),
                       key=lambda r: (r.bpw, r.series)):
        ours = best_below(rows, peer.bpw, True)
        if ours is None:
            lines.append(f"{peer.series} b{peer.bits} ({peer.bpw:.3f} bpw, KL {peer.kl:.4f}): no calderalab row at "
                         f"≤ {peer.bpw:.3f} bpw measured")
            continue
        overlap = ours.kl_hi >= peer.kl_lo and peer.kl_hi >= ours.kl_lo
        if ours.kl_hi < peer.kl_lo:
            verdict = "calderalab leads"
        elif ours.kl < peer.kl:
            verdict = "calderalab lower, but the intervals overlap: no lead shown"
        else:
            verdict = "calderalab does NOT lead" + (" (intervals overlap)" if overlap else "")
        lines.append(f"{peer.series} b{peer.bits} ({peer.bpw:.3f} bpw, KL {peer.kl:.4f}) vs calderalab {ours.series} "
                     f"b{ours.bits} ({ours.bpw:.3f} bpw, KL {ours.kl:.4f}): {verdict}")
    return lines


def speed(rows: list[Row], ours: str = "caldera r64 row", peer: str = "gptqmodel g64") -> list[str]:
    """Per bit width with both rows timed: calderalab's compression wall time over the peer's (issue
    goal ≤ 0.5). Both are whole runs on the same calibration: Hessians + decompositions against
    GPTQModel's load, calibration passes and quantisation. `ours` run under another executor, thread
    count or Hessian dtype, or with the randomized SVD (series "caldera r64 row [ray t1]", "caldera r64
    row rsvd [H bfloat16]") gets a line of its own; other seeds and codebooks do not."""
    timed = {(r.series, r.bits): r for r in rows if not r.failure and math.isfinite(r.seconds)}
    lines = []
    for (name, bits), mine in sorted(timed.items()):
        theirs = timed.get((peer, bits))
        if re.fullmatch(re.escape(ours) + r"( rsvd)?( \[[^]]*\])?", name) and theirs is not None:
            lines.append(f"compression time, {name} b{bits} / {peer} b{bits}: {mine.seconds / theirs.seconds:.2f} "
                         f"({mine.seconds:.0f} s / {theirs.seconds:.0f} s)")
    return lines


def plot(rows: list[Row], path: str, title: str) -> None:
    """log KL against bpw, one line per series; calderalab's solid, peers' dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    version_of = {r.series: r.version for r in rows}
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: tab10's 10 repeat with 12+ series
    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (name, points) in enumerate(series(rows).items()):
        ours = version_of[name].startswith("calderalab")
        ax.plot(*zip(*points), marker="o" if ours else "s", linestyle="-" if ours else "--", label=name,
                color=colours[(2 * i) % 20 + (i // 10) % 2])
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (every stored bit)")
    ax.set_ylabel("KL(original ‖ compressed), nats per token")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tuning_windows_plot(tunings: list, path: str, title: str) -> None:
    """One panel per tuned row: each test window's KL after tuning against before (nats/token), with the
    diagonal; points below it are windows the tuning improved. tunings: (label, source, tuned) scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tunings), figsize=(max(3.6 * len(tunings), 5.0), 4.0), squeeze=False)
    for ax, (label, source, tuned) in zip(axes[0], tunings):
        tokens = source.perplexity.window_tokens  # window_kl holds each window's KL sum
        before = [k / n for k, n in zip(source.window_kl, tokens)]
        after = [k / n for k, n in zip(tuned.window_kl, tokens)]
        lower = sum(a < b for a, b in zip(after, before))
        ax.plot(before, after, "o", ms=3, color="#357")
        lo, hi = min(min(before), min(after)), max(max(before), max(after))
        ax.plot([lo, hi], [lo, hi], "-", color="#999", lw=1)
        ax.set_title(f"{label}\nlower in {lower} of {len(before)} windows", fontsize=8)
        ax.set_xlabel("KL before tuning (nats/token, per window)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("KL after tuning", fontsize=8)
    fig.suptitle(textwrap.fill(title, 30 * max(len(tunings), 2)), fontsize=9)  # a one-panel figure is narrow
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
