"""The E8P codebook (core.e8p) and E8P matrices (core.e8p_matrix): construction, exact nearest
codeword, Gaussian distortion against the rate–distortion bound, scales, packing, bpw."""

import math

import pytest
import torch

from calderalab.core import e8p
from calderalab.core.e8p_matrix import E8PMatrix, e8p_group_size, fit_scale, quantize_e8p
from calderalab.core.pack import pack_codes16, unpack_codes16

LLOYD_MAX_2BIT = 0.1175  # MSE/σ² of the optimal scalar 2-bit quantiser of a Gaussian (Max, 1960)
LLOYD_MAX_3BIT = 0.03454  # the same at 3 bits


def test_abs_patterns_are_227_small_d8hat_norms_plus_29_of_norm_12():
    A = e8p.abs_patterns()
    assert A.shape == (256, 8) and torch.unique(A, dim=0).shape[0] == 256
    assert torch.equal(2 * A % 2, torch.ones_like(A))  # half-integers
    norms = A.pow(2).sum(dim=1)
    assert (norms[:227] <= 10).all() and torch.equal(norms[227:], torch.full((29,), 12.0))
    # t entries 3/2 and f entries 5/2 (rest ½) have ‖·‖² = 2 + 2t + 6f ≤ 10 ⇔ t + 3f ≤ 4:
    count = sum(math.comb(8, f) * math.comb(8 - f, t) for f in range(2) for t in range(5 - 3 * f))
    assert count == 227
    twos = (2 * A[:227]).long()
    assert ((twos == 5).sum(dim=1) <= 1).all() and ((twos == 3).sum(dim=1) + 3 * (twos == 5).sum(dim=1) <= 4).all()


def test_codebook_has_65536_distinct_points_of_e8_plus_quarter():
    C = e8p.codebook()
    assert C.shape == (65536, 8) and torch.unique(C, dim=0).shape[0] == 65536
    twice = 2 * (C - 0.25)  # c − ¼·1 ∈ E8 ⇔ 2(c − ¼) all even or all odd integers, with Σ(c − ¼) even
    assert torch.equal(twice, twice.round())
    t = twice.round().long()
    all_even, all_odd = (t % 2 == 0).all(dim=1), (t % 2 == 1).all(dim=1)
    assert (all_even | all_odd).all() and (t.sum(dim=1) % 4 == 0).all()


def _point_keys(C):
    """One int64 per point of C (entries in ¼Z, |c| ≤ 11/4): a base-23 number of its digits."""
    digits = (4 * C).round().long() + 11  # (N, 8) in 0..22
    return (digits * 23 ** torch.arange(8)).sum(dim=1)


def test_codebook_is_symmetric_and_its_mean_is_zero():
    C = e8p.codebook()
    assert torch.equal(torch.sort(_point_keys(C)).values, torch.sort(_point_keys(-C)).values)
    torch.testing.assert_close(C.mean(dim=0), torch.zeros(8), atol=1e-6, rtol=0)


def test_code_layout_shift_bit_pattern_and_parity():
    C, A = e8p.codebook(), e8p.abs_patterns()
    codes = torch.tensor([0, 1, 127, 128 * 5 + 3, 1 << 15, (1 << 15) | (255 << 7) | 99])
    shift = 0.25 - 0.5 * (codes >> 15).float()
    torch.testing.assert_close(C[codes].sub(shift[:, None]).abs(), A[(codes >> 7) & 255])
    x = C - (0.25 - 0.5 * (torch.arange(65536) >> 15).float())[:, None]  # (65536, 8) points of S ⊂ D8^
    assert ((x.sum(dim=1).round().long()) % 2 == 0).all()


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_nearest_matches_brute_force(sigma):
    gen = torch.Generator().manual_seed(int(sigma * 10))
    X = sigma * torch.randn(300, 8, generator=gen)
    C = e8p.codebook()
    codes = e8p.nearest_codes(X, chunk=128)  # several chunks
    brute = (X.pow(2).sum(1, keepdim=True) - 2 * X @ C.T + C.pow(2).sum(1)).min(dim=1).values.double()  # (300,)
    found = (X.double() - C[codes].double()).pow(2).sum(dim=1)
    torch.testing.assert_close(found, brute, atol=1e-4, rtol=0)  # equal distances (codes may differ on ties)


def test_nearest_is_exact_on_codewords_and_rejects_bad_shapes():
    C = e8p.codebook()
    idx = torch.randperm(65536, generator=torch.Generator().manual_seed(0))[:500]
    assert torch.equal(e8p.nearest_codes(C[idx]), idx)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        e8p.nearest_codes(torch.zeros(4, 6))


def test_gaussian_distortion_sits_between_the_bound_and_any_scalar_quantiser():
    """At 2 bits D(R) = σ²·2^(−2R) = 0.0625σ²; no scalar 2-bit quantiser beats Lloyd–Max's 0.1175σ²."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(512, 1024, generator=gen)  # σ = 1
    mse = float((quantize_e8p(X, None).dequantize() - X).pow(2).mean())
    gap_db = 10 * math.log10(mse / 2.0**-4)
    assert 2.0**-4 < mse < LLOYD_MAX_2BIT
    assert gap_db < 10 * math.log10(LLOYD_MAX_2BIT / 2.0**-4) - 0.8  # a lattice gain of > 0.8 dB over scalar


def test_rms_scale_and_dequantize():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(6, 48, generator=gen) * torch.tensor([0.1, 1.0, 3.0, 10.0, 0.5, 2.0])[:, None]
    scale = fit_scale(X, 16)  # (6, 3)
    rms = X.reshape(6, 3, 16).pow(2).mean(dim=2).sqrt()
    assert scale.shape == (6, 3) and torch.equal(scale, scale.half().float())
    assert (scale >= rms / 1.03).all() and (scale <= rms / 1.03 * (1 + 2**-10)).all()  # fp16 rounded up
    q = quantize_e8p(X, 16)
    expected = e8p.codebook()[q.codes].reshape(6, 48) * q.scale.float().repeat_interleave(16, dim=1)
    assert torch.equal(q.dequantize(), expected) and q.shape == (6, 48)


def test_group_size_must_be_a_multiple_of_8_dividing_cols():
    assert e8p_group_size(48, None) == 48 and e8p_group_size(48, 16) == 16
    with pytest.raises(ValueError, match="multiple of 8"):
        e8p_group_size(44, None)
    with pytest.raises(ValueError, match="does not divide"):
        e8p_group_size(48, 32)


def test_storage_bits_are_16_per_8_weights_plus_16_per_group():
    q = quantize_e8p(torch.randn(4, 64, generator=torch.Generator().manual_seed(2)), 32)
    assert q.storage_bits() == 4 * 64 * 2 + 4 * 2 * 16
    assert pack_codes16(q.codes).numel() * 8 == 4 * 64 * 2


def test_pack16_round_trips_and_rejects_out_of_range():
    codes = torch.tensor([0, 1, 255, 256, 65535, 4660])
    packed = pack_codes16(codes)
    assert packed.dtype == torch.uint8 and packed.tolist()[:4] == [0, 0, 1, 0]  # low byte first
    assert torch.equal(unpack_codes16(packed, 6), codes)
    with pytest.raises(ValueError, match="outside"):
        pack_codes16(torch.tensor([65536]))
    with pytest.raises(ValueError, match="need"):
        unpack_codes16(packed, 5)


def test_e8p_matrix_is_frozen():
    q = E8PMatrix(torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1, dtype=torch.float16), 8)
    with pytest.raises(AttributeError):
        q.group_size = 16  # type: ignore[misc]


def test_e81b_is_256_distinct_points_of_e8_of_smallest_norm():
    C = e8p.e81b_codebook()
    assert C.shape == (256, 8) and len(torch.unique(C, dim=0)) == 256
    doubled = 2 * C
    integer = (doubled.remainder(2) == 0).all(dim=1)
    half = (doubled.remainder(2) == 1).all(dim=1)
    assert (integer | half).all() and (C.sum(dim=1).remainder(2) == 0).all()  # E8 = D8 ∪ D8^
    norms = C.pow(2).sum(dim=1)
    assert norms.unique(return_counts=True)[1].tolist() == [1, 240, 15]  # 0, the 240 roots, 15 of ±2·e_i


def test_nearest_e81b_matches_brute_force():
    X = torch.randn(4000, 8, generator=torch.Generator().manual_seed(5))
    codes = e8p.nearest_e81b(X)
    brute = torch.cdist(X, e8p.e81b_codebook()).argmin(dim=1)
    d_fast = (e8p.decode_e81b(codes) - X).pow(2).sum(dim=1)
    d_brute = (e8p.decode_e81b(brute) - X).pow(2).sum(dim=1)
    assert torch.allclose(d_fast, d_brute, atol=1e-5)


@pytest.mark.parametrize("bits", [3, 4])
def test_residual_stages_sit_between_the_bound_and_the_scalar_grid(bits):
    """D(R) = 2^(−2R)σ² bounds every quantiser; the residual stage must beat the scalar grid of the same
    bits (at 3 bits also Lloyd–Max's optimal scalar quantiser) and cut the 2-bit error by over 3x per bit."""
    from calderalab.core.quantize import quantize_rtn

    X = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    q = quantize_e8p(X, None, bits)
    mse = float((q.dequantize() - X).pow(2).mean())
    mse2 = float((quantize_e8p(X, None).dequantize() - X).pow(2).mean())
    scalar = float((quantize_rtn(X, bits, None).dequantize() - X).pow(2).mean())
    assert 2.0 ** (-2 * bits) < mse < scalar and mse < mse2 / 3 ** (bits - 2)
    if bits == 3:
        assert mse < LLOYD_MAX_3BIT
    assert q.bits == bits and q.resid is not None and q.storage_bits() == X.numel() * bits + 512 * 16


def test_residual_codes_decode_as_first_plus_scaled_second():
    X = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    for bits, second in ((3, e8p.decode_e81b), (4, e8p.decode)):
        q = quantize_e8p(X, 16, bits)
        V = e8p.decode(q.codes) + second(q.resid) / e8p.RESID_SCALE[bits]  # (4, 4, 8)
        assert torch.equal(q.dequantize(), V.reshape(4, 32) * q.scale.float().repeat_interleave(16, dim=1))
    with pytest.raises(ValueError, match="needs residual"):
        E8PMatrix(q.codes, q.scale, 16, 3)
    with pytest.raises(ValueError, match="takes no residual"):
        E8PMatrix(q.codes, q.scale, 16, 2, q.resid)
