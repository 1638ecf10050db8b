"""Embedder option checks: concurrency out of range or not an integer is refused, naming the argument."""
import pytest

import chrysalis


@pytest.mark.parametrize("bad", [0, 257, -1])
def test_concurrency_out_of_range(bad):
    with pytest.raises(ValueError, match="concurrency"):
        chrysalis.Embedder(concurrency=bad)


@pytest.mark.parametrize("bad", ["4", 4.0, None, True])
def test_concurrency_not_an_integer(bad):
    with pytest.raises(TypeError, match="concurrency"):
        chrysalis.Embedder(concurrency=bad)


@pytest.mark.parametrize("good", [1, 8, 256])
def test_concurrency_in_range(good):
    e = chrysalis.Embedder(concurrency=good, dim=16)
    assert e.embed(["a", "b"]).shape == (2, 16)
