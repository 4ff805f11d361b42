"""benchmarks/peers.py's pure parts: the bpw accounting of each peer, the cache key, the table, the plot's
series and the lead verdicts. No peer is installed or run here."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def mods(monkeypatch):
    """peer_specs, peer_table and peer_envs imported from benchmarks/ (they import each other by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return {name: importlib.import_module(name) for name in ("peer_specs", "peer_table", "peer_envs")}


def stored_bits(peer: str, b: int, g: int, r: int, m: int, n: int) -> int:
    """Reference: list every tensor the peer's checkpoint stores for one (m, n) weight, with its bit width."""
    if peer == "quanto":  # quanto picks its own group per row width (nn/qmodule.py), written out here
        g = {576: 96, 1536: 128, 100: 100}[n]
    groups = m * math.ceil(n / g)
    tensors = {
        "hqq": [(m * n, b), (groups, 16), (groups, 16)],  # W_q, scale, zero (fp16)
        "torchao": [(m * n, b), (groups, 16), (groups, b)],  # codes, scale, integer zero point
        "quanto": [(m * n, b), (groups, 16), (groups, 16)],  # codes, scale, float shift
        "llmc-gptq": [(m * n, b), (groups, 16), (2, 32)],  # weight_packed, weight_scale, weight_shape
        "llmc-awq": [(m * n, b), (groups, 16), (groups, b), (2, 32)],  # + weight_zero_point (packed)
        "gptqmodel": [(m * n, b), (groups, 16), (groups, b), (n, 32)],  # qweight, scales, qzeros, g_idx
        "gptq-eora": [(m * n, b), (groups, 16), (groups, b), (n, 32), (r * n, 16), (m * r, 16)],  # + A, B
    }[peer]
    return sum(count * bits for count, bits in tensors)


@pytest.mark.parametrize("peer", ["hqq", "torchao", "quanto", "llmc-gptq", "llmc-awq", "gptqmodel", "gptq-eora"])
@pytest.mark.parametrize("shape", [(576, 576), (1536, 576), (576, 1536), (7, 100)])
def test_matrix_bpw_counts_every_stored_tensor(mods, peer, shape):
    specs = mods["peer_specs"]
    b = specs.PEERS[peer].bits[-1]
    g = specs.PEERS[peer].default_group
    r = 32 if specs.PEERS[peer].has_rank else 0
    config = specs.PeerConfig(peer, b, g, r)
    m, n = shape
    assert specs.matrix_bpw(config, m, n) == pytest.approx(stored_bits(peer, b, g, r, m, n) / (m * n), rel=1e-12)


def test_known_values_and_weighted_mean(mods):
    specs = mods["peer_specs"]
    assert specs.matrix_bpw(specs.PeerConfig("hqq", 4, 64), 576, 576) == 4.5  # 4 + 32/64
    assert specs.matrix_bpw(specs.PeerConfig("hqq", 2, 64), 10, 100) == pytest.approx(2 + 2 * 32 / 100)  # partial group
    gptq = specs.PeerConfig("gptqmodel", 3, 64)
    assert specs.matrix_bpw(gptq, 576, 1536) == pytest.approx(3 + 19 / 64 + 32 / 576)
    eora = specs.PeerConfig("gptq-eora", 3, 64, 64)
    assert specs.matrix_bpw(eora, 576, 1536) - specs.matrix_bpw(gptq, 576, 1536) == pytest.approx(16 * 64 * 2112 / (576 * 1536))
    quanto = specs.PeerConfig("quanto", 4, 128)
    assert specs.matrix_bpw(quanto, 576, 576) == pytest.approx(4 + 32 / 96)  # 128 does not divide 576
    assert specs.matrix_bpw(quanto, 576, 1536) == 4.25
    shapes = [(576, 576), (1536, 576)]
    bits = sum(stored_bits("gptqmodel", 3, 64, 0, m, n) for m, n in shapes)
    assert specs.model_bpw(gptq, shapes) == pytest.approx(bits / sum(m * n for m, n in shapes), rel=1e-12)
    with pytest.raises(ValueError, match="at least one"):
        specs.model_bpw(gptq, [])


def test_configs_refuse_what_a_peer_cannot_do(mods):
    specs = mods["peer_specs"]
    with pytest.raises(ValueError, match="supports bits"):
        specs.PeerConfig("quanto", 3, 128)
    with pytest.raises(ValueError, match="needs a rank"):
        specs.PeerConfig("gptq-eora", 3, 64)
    with pytest.raises(ValueError, match="unknown peer"):
        specs.PeerConfig("nope", 3, 64)
    rows = specs.peer_configs(["quanto", "gptq-eora"], [2, 3, 4], [32, 64])
    assert [(c.peer, c.bits, c.rank) for c in rows] == [("quanto", 2, 0), ("quanto", 4, 0)] + [
        ("gptq-eora", b, r) for b in (2, 3, 4) for r in (32, 64)]
    gaps = specs.unsupported(["quanto", "hqq"], [2, 3, 4])
    assert [(p, b) for p, b, _ in gaps] == [("quanto", 3)] and "no 3-bit" in gaps[0][2]


def test_output_key_changes_with_everything_that_changes_the_output(mods):
    specs = mods["peer_specs"]
    gptq, hqq = specs.PeerConfig("gptqmodel", 4, 64), specs.PeerConfig("hqq", 4, 64)
    key = specs.output_key(gptq, "5.0", "smollm2", "calibA", "w1")
    for other in [specs.output_key(gptq, "5.1", "smollm2", "calibA", "w1"),
                  specs.output_key(specs.PeerConfig("gptqmodel", 3, 64), "5.0", "smollm2", "calibA", "w1"),
                  specs.output_key(gptq, "5.0", "smollm2", "calibB", "w1"),
                  specs.output_key(gptq, "5.0", "smollm2", "calibA", "w2")]:
        assert other != key
    assert specs.output_key(gptq, "5.0", "smollm2", "calibA", "w1") == key
    # HQQ takes no calibration, so its cached output is shared across calibrations
    assert specs.output_key(hqq, "0.2", "smollm2", "calibA", "w1") == specs.output_key(hqq, "0.2", "smollm2", "calibB", "w1")


def make_row(table, series, bpw, kl, version="hqq 0.2", **kw):
    return table.Row(method=series.split()[0], series=series, bits="3", group="64", rank="-", version=version,
                     bpw=bpw, ppl=20.0, ppl_ratio=1.1, kl=kl, kl_lo=kl * 0.9, kl_hi=kl * 1.1, top1=0.8, seconds=5.0, **kw)


def test_table_sorts_by_bpw_and_lists_failures_last(mods):
    table = mods["peer_table"]
    rows = [make_row(table, "hqq g64", 4.5, 0.1), make_row(table, "caldera r64 row", 3.2, 0.2, "calderalab 0.1"),
            table.Row(method="llmc-awq", series="llmc-awq g64", bits="2", group="64", rank="-", version="-",
                      failure="install failed: no wheel")]
    lines = table.format_table(rows).splitlines()
    assert lines[0].startswith("| method |") and len(lines) == 5
    assert "3.200" in lines[2] and "4.500" in lines[3] and "not run: install failed: no wheel" in lines[4]
    assert "0.2000 (0.1800 .. 0.2200)" in lines[2] and "80.0%" in lines[2]
    assert all(line.count("|") == 11 for line in lines)  # 10 columns in every row, failed ones included
    with pytest.raises(ValueError, match="finite"):
        table.Row(method="x", series="x", bits="3", group="64", rank="-", version="-", bpw=3.0)
    with pytest.raises(ValueError, match="one line"):
        table.Row(method="x", series="x", bits="3", group="64", rank="-", version="-", failure="a | b")


def test_series_and_lead_verdicts(mods):
    table = mods["peer_table"]
    rows = [make_row(table, "original", 32.0, 0.0),
            make_row(table, "ldlq row", 3.1, 0.30, "calderalab 0.1"), make_row(table, "ldlq row", 2.1, 2.0, "calderalab 0.1"),
            make_row(table, "hqq g64", 3.5, 0.25), make_row(table, "gptqmodel g64", 3.0, 0.20, "gptqmodel 5")]
    assert table.series(rows) == {"gptqmodel g64": [(3.0, 0.20)], "hqq g64": [(3.5, 0.25)],
                                  "ldlq row": [(2.1, 2.0), (3.1, 0.30)]}
    verdicts = table.leads(rows)
    # GPTQ (3.0 bpw, KL 0.20): calderalab's only row at ≤ 3.0 bpw is ldlq 2.1 (KL 2.0): it does not lead;
    # HQQ (3.5 bpw, KL 0.25): ldlq 3.1 (KL 0.30) is the best at ≤ 3.5 and loses too
    assert len(verdicts) == 2 and all("does NOT lead" in v for v in verdicts)
    assert verdicts[0].startswith("gptqmodel g64") and "ldlq row b3 (2.100 bpw" in verdicts[0]
    better = rows + [make_row(table, "caldera r64 row", 3.0, 0.1, "calderalab 0.1")]
    assert all("calderalab leads" in v for v in table.leads(better))  # 3.0 bpw counts as "same or lower"
    assert "no calderalab row" in table.leads([make_row(table, "hqq g64", 2.0, 1.0)])[0]
    close = [make_row(table, "caldera r64 row", 3.0, 0.19, "calderalab 0.1"), make_row(table, "gptqmodel g64", 3.0, 0.20)]
    assert "no lead shown" in table.leads(close)[0]  # 0.19 ± 10% against 0.20 ± 10%: within the noise


def test_last_line_is_one_table_cell(mods):
    envs = mods["peer_envs"]
    assert envs.last_line("ok\nERROR: No matching distribution | x\nWARNING: cache\n") == "ERROR: No matching distribution / x"
    assert envs.last_line("") == "no output"


def test_speed_ratio_pairs_rows_of_the_same_bits(mods):
    Row, speed = mods["peer_table"].Row, mods["peer_table"].speed
    row = lambda series, bits, seconds, version="x 1": Row(method=series, series=series, bits=bits, group="-", rank="-",  # noqa: E731
                                                           version=version, bpw=3.0, ppl=1.0, ppl_ratio=1.0, kl=0.1,
                                                           kl_lo=0.1, kl_hi=0.1, top1=0.9, seconds=seconds)
    rows = [row("caldera r64 row", "3", 120.0, "calderalab 0.1"), row("gptqmodel g64", "3", 300.0),
            row("caldera r64 row", "4", 100.0, "calderalab 0.1"), row("gptqmodel g64", "2", 50.0)]
    assert speed(rows) == ["compression time, caldera r64 row b3 / gptqmodel g64 b3: 0.40 (120 s / 300 s)"]
    # the same row under another executor / thread count gets its own line; other series never do
    rows += [row("caldera r64 row [ray t1]", "3", 90.0, "calderalab 0.1"), row("caldera r64 row e8p", "3", 60.0),
             row("caldera r64 row rsvd [H bfloat16]", "3", 75.0, "calderalab 0.1"), row("caldera r64 row s1", "3", 99.0)]
    assert speed(rows) == ["compression time, caldera r64 row b3 / gptqmodel g64 b3: 0.40 (120 s / 300 s)",
                           "compression time, caldera r64 row [ray t1] b3 / gptqmodel g64 b3: 0.30 (90 s / 300 s)",
                           "compression time, caldera r64 row rsvd [H bfloat16] b3 / gptqmodel g64 b3: 0.25 (75 s / 300 s)"]



def test_a_printed_table_reads_back_to_its_rows_verdicts_and_series(mods, tmp_path):
    """parse_table inverts format_table to the printed precision, so a README's table redraws the plot
    and gives the same verdicts (the runs' caches may be gone); a table that is not there is refused."""
    pt = mods["peer_table"]
    Row = pt.Row
    def row(method, group, rank, version, bits, bpw, kl, lo, hi, seconds=12.0):  # noqa: E306
        return Row(method=method, series=pt.table_series(method, group, rank, version), bits=bits, group=group,
                   rank=rank, version=version, bpw=bpw, ppl=27.5, ppl_ratio=1.074, kl=kl, kl_lo=lo, kl_hi=hi,
                   top1=0.853, seconds=seconds)
    rows = [row("caldera e8p", "row", "16", "calderalab 0.1.0", "4", 4.21, 0.0642, 0.0617, 0.0669),
            row("caldera [ray t1]", "row", "64", "calderalab 0.1.0", "3", 3.791, 0.1718, 0.1647, 0.179, 250.0),
            row("ldlq kl-plan", "row", "-", "calderalab 0.1.0", "4.3", 4.3, 0.0474, 0.0455, 0.0494),
            row("gptq-eora", "64", "64", "gptqmodel 7.7.0", "3", 6.286, 0.302, 0.2865, 0.3183),
            row("gptqmodel", "64", "-", "gptqmodel 7.7.0", "3", 3.342, 0.6656, 0.6368, 0.6942, 500.0),
            row("hqq", "64", "-", "hqq 0.2.8", "4", 4.5, 0.0400, 0.0390, 0.0410),
            Row(method=pt.ORIGINAL_METHOD, series=pt.ORIGINAL, bits="-", group="-", rank="-", version="-", bpw=32.0,
                ppl=25.62, ppl_ratio=1.0, kl=0.0, kl_lo=0.0, kl_hi=0.0, top1=1.0),
            Row(method="llmc-awq", series="llmc-awq g64", bits="2", group="64", rank="-", version="0.14",
                failure="not run in this invocation")]
    assert [r.series for r in rows[:6]] == ["caldera r16 row e8p", "caldera r64 row [ray t1]", "ldlq kl-plan",
                                            "gptq-eora g64 r64", "gptqmodel g64", "hqq g64"]
    text = "intro\n\n" + pt.format_table(rows) + "\n\nafter\n"
    back = pt.parse_table(text)
    key = lambda r: (r.series, r.bits)  # noqa: E731
    assert sorted(back, key=key) == sorted(rows, key=key)  # every value above is exact at the printed precision
    assert pt.leads(back) == pt.leads(rows) and any("does NOT lead" in v for v in pt.leads(back))  # hqq's planted win
    assert pt.speed(back) == ["compression time, caldera r64 row [ray t1] b3 / gptqmodel g64 b3: 0.50 (250 s / 500 s)"]
    with pytest.raises(ValueError, match="no peer table in the text"):
        pt.parse_table("| a | b |\n|---|---|\n")
    broken = text.replace("0.0642 (0.0617 .. 0.0669)", "0.0642 [0.0617, 0.0669]")
    with pytest.raises(ValueError, match="cannot read perplexity, KL or top-1"):
        pt.parse_table(broken)
