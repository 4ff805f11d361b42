import pytest
import torch

from calderalab.core.quantize import decode, encode, fit_grid, quantize_rtn, round_to_fp16


def _X(rows=8, cols=16, seed=0, scale=1.0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("group_size", [None, 4, 8])
def test_rtn_lands_on_grid_within_half_step(bits, group_size):
    X = _X(seed=bits)
    q = quantize_rtn(X, bits, group_size)
    g = q.group_size
    assert q.codes.dtype == torch.uint8 and int(q.codes.max()) < 2**bits
    assert q.scale.dtype == torch.float16 and q.scale.shape == (8, 16 // g)
    X_hat = q.dequantize()
    step = q.scale.float().repeat_interleave(g, dim=1)  # (rows, cols)
    off = q.offset.float().repeat_interleave(g, dim=1)
    # on the grid: (x̂ − offset)/scale is an integer code
    torch.testing.assert_close((X_hat - off) / step, q.codes.float(), atol=1e-4, rtol=0)
    assert ((X - X_hat).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all()


def test_fp16_directed_rounding():
    x = torch.tensor([0.1, -0.1, 1e-8, -1e-8, 0.0, 3.0])
    up, down = round_to_fp16(x, up=True), round_to_fp16(x, up=False)
    assert (up >= x).all() and (down <= x).all()
    assert torch.equal(up.half().float(), up) and torch.equal(down.half().float(), down)
    with pytest.raises(ValueError, match="fp16 range"):
        round_to_fp16(torch.tensor([1e6]), up=True)


def test_constant_group_is_exact():
    X = torch.full((2, 8), 0.375)
    assert torch.equal(quantize_rtn(X, 3, 4).dequantize(), X)


def test_clip_search_never_worse_than_minmax():
    X = _X(rows=32, cols=64, seed=3)
    X[0, 0] = 12.0  # an outlier stretches the min–max range
    for bits in (2, 3, 4):
        errs = []
        for clip in (False, True):
            s, o = fit_grid(X, bits, 16, clip_search=clip)
            errs.append(((decode(encode(X, s, o, bits, 16), s, o, 16) - X) ** 2).reshape(32, 4, 16).sum(-1))
        assert (errs[1] <= errs[0] + 1e-6).all()
        assert errs[1].sum() < errs[0].sum()


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="group_size=5 does not divide d_in=16"):
        quantize_rtn(_X(), 3, 5)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_grid_error_in_place_equals_the_plain_expression_bit_for_bit(bits):
    """The clip search's error, computed in one buffer, gives the very bits of the plain expression (the
    grids every stored artifact was chosen by), on heavy tails and on small integers (ties)."""
    from calderalab.core.quantize import _grid_for_range, _grid_sq_error

    gen = torch.Generator().manual_seed(bits)
    for X in (torch.randn(96, 128, generator=gen) ** 3, torch.randint(-3, 4, (96, 128), generator=gen).float()):
        groups = X.reshape(96, 16, 8)
        lo, hi = groups.amin(dim=2), groups.amax(dim=2)
        for p in (1.0, 0.75, 0.5):
            mid, half = (lo + hi) / 2, (hi - lo) / 2
            scale, offset = _grid_for_range(mid - p * half, mid + p * half, bits)
            s, o = scale[..., None], offset[..., None]
            plain = (groups - (o + s * torch.round((groups - o) / s).clamp(0, 2**bits - 1))).pow(2).sum(dim=2)
            assert torch.equal(_grid_sq_error(groups, scale, offset, bits), plain)


def _scan_fit_grid(X, bits, g):
    """The clip search as first written: p = 1, then 0.95 … 0.50, each grid rounded on its own, a
    candidate kept only when strictly better. fit_grid must give these grids bit for bit (stored
    artifacts and every published figure were made by this)."""
    from calderalab.core.quantize import _grid_for_range, _grid_sq_error

    rows, cols = X.shape
    groups = X.reshape(rows, cols // g, g)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)
    best = _grid_for_range(lo, hi, bits)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    best_err = _grid_sq_error(groups, *best, bits)
    for p in torch.arange(0.95, 0.49, -0.05).tolist():
        scale, offset = _grid_for_range(mid - p * half, mid + p * half, bits)
        err = _grid_sq_error(groups, scale, offset, bits)
        better = err < best_err
        best = (torch.where(better, scale, best[0]), torch.where(better, offset, best[1]))
        best_err = torch.where(better, err, best_err)
    return best


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("g", [8, 128])
def test_clip_search_equals_the_scan_bit_for_bit(bits, g):
    gen = torch.Generator().manual_seed(bits * 1000 + g)
    heavy = torch.randn(96, 128, generator=gen) ** 3  # heavy tails: the search clips
    ties = torch.randint(-3, 4, (96, 128), generator=gen).float()  # small integers: equal errors across p
    for X in (heavy, ties, torch.randn(96, 128, generator=gen) * 1e-3):
        got, want = fit_grid(X, bits, g, clip_search=True), _scan_fit_grid(X, bits, g)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
