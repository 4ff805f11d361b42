import pytest
import torch

from calderalab.core.pack import pack_codes, packed_nbytes, unpack_codes


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("numel", [1, 7, 8, 64, 1001])
def test_round_trip_every_width(bits, numel):
    gen = torch.Generator().manual_seed(bits * 1000 + numel)
    codes = torch.randint(0, 2**bits, (numel,), generator=gen, dtype=torch.int64).to(torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(numel, bits)
    assert torch.equal(unpack_codes(packed, bits, numel), codes)


def test_layout_is_little_endian_bit_stream():
    # codes 1, 2, 3 at 2 bits: bits 10 01 11 -> byte 0b00111001
    assert pack_codes(torch.tensor([1, 2, 3], dtype=torch.uint8), 2).tolist() == [0b00111001]
    # 3-bit codes spill across byte boundaries: 7, 0, 5 -> 111 000 101 -> 0b01000111, 0b00000001
    assert pack_codes(torch.tensor([7, 0, 5], dtype=torch.uint8), 3).tolist() == [0b01000111, 0b00000001]


def test_rejects_out_of_range_and_wrong_sizes():
    with pytest.raises(ValueError, match=r"outside \[0, 3\]"):
        pack_codes(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="need 1"):
        unpack_codes(torch.zeros(2, dtype=torch.uint8), 2, 3)
    with pytest.raises(ValueError, match="integer"):
        pack_codes(torch.zeros(3), 2)
