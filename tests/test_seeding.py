from cotrain.seeding import derive_seed, numpy_rng


def test_streams_are_stable_and_independent():
    assert derive_seed(0, "partition") == derive_seed(0, "partition")
    assert derive_seed(0, "partition") != derive_seed(1, "partition")
    assert derive_seed(0, "partition") != derive_seed(0, "sampling")
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    assert 0 <= derive_seed(2**40, "x") < 2**63
    assert numpy_rng(3, "x").integers(0, 1000, 5).tolist() == numpy_rng(3, "x").integers(0, 1000, 5).tolist()
