import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.tile import InputSizes, TileGrid, Window, reflect_index, reflect_pad


@given(st.integers(1, 40), st.integers(0, 120), st.integers(0, 120))
def test_reflect_index_matches_numpy_pad(size, before, after):
    axis = np.arange(size)
    expected = np.pad(axis, (before, after), mode="reflect")
    assert reflect_index(-before, size + after, size).tolist() == expected.tolist()


def test_reflect_pad_2d_matches_numpy():
    image = np.arange(3 * 5 * 7).reshape(3, 5, 7)
    out = reflect_pad(image, (11, 2), (3, 13))
    assert np.array_equal(out, np.pad(image, ((0, 0), (11, 3), (2, 13)), mode="reflect"))


def test_input_sizes():
    same = InputSizes(16, 16)
    assert [same.at_least(n) for n in (1, 16, 17, 33)] == [16, 16, 32, 48]
    valid = InputSizes(44, 4)
    assert [valid.at_least(n) for n in (1, 44, 45, 72)] == [44, 44, 48, 72]


def test_grid_cores_cover_the_image_once():
    grid = TileGrid(1000, 1300, 256, 32, 16, InputSizes(16, 16))
    assert grid.shape == (4, 6)
    covered = np.zeros((1000, 1300), int)
    for row, col in grid.indices():
        covered[grid.core(row, col).to_slices()] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_windows_keep_the_reference_alignment(padding):
    sizes = InputSizes(16, 16) if padding == "same" else InputSizes(44, 4)
    grid = TileGrid(300, 170, 64, 20, 4, sizes, padding)
    for row, col in grid.indices():
        plan = grid.plan(row, col, 32)
        for patch in plan.patches:
            assert patch.window.row_off % 4 == (-20) % 4
            assert patch.window.col_off % 4 == (-20) % 4
            assert patch.window.height == sizes.at_least(patch.core.height + 40)
            rows, cols = patch.output_slices()
            assert (rows.stop - rows.start, cols.stop - cols.start) == (
                patch.core.height,
                patch.core.width,
            )
            # the read box contains every patch window
            assert plan.read.row_off <= patch.window.row_off
            assert patch.window.row_stop <= plan.read.row_stop


def test_patches_tile_the_core():
    grid = TileGrid(100, 100, 64, 8, 8, InputSizes(8, 8))
    plan = grid.plan(0, 0, 24)
    cores = {(p.core.row_off, p.core.col_off, p.core.height, p.core.width) for p in plan.patches}
    assert len(cores) == 9
    assert (48, 48, 16, 16) in cores


def test_window_union():
    assert Window(0, 0, 2, 2).union(Window(5, -1, 1, 1)) == Window(0, -1, 6, 3)


def test_tile_not_multiple_of_alignment():
    with pytest.raises(ConfigError, match="not a positive multiple of the model's alignment 16"):
        TileGrid(100, 100, 40, 8, 16, InputSizes(16, 16))


def test_halo_larger_than_tile():
    with pytest.raises(ConfigError, match="halo 80 is larger than the tile 64"):
        TileGrid(100, 100, 64, 80, 16, InputSizes(16, 16))


def test_bad_patch():
    grid = TileGrid(100, 100, 64, 8, 16, InputSizes(16, 16))
    with pytest.raises(ConfigError, match="patch 24"):
        grid.plan(0, 0, 24)
