from cotrain.seeding import derive_seed, numpy_rng


def test_streams_are_stable_and_independent():
    assert derive_seed(0, "partition") == derive_seed(0, "partition")
    assert derive_seed(0, "partition") != derive_seed(1, "partition")
    assert derive_seed(0, "partition") != derive_seed(0, "sampling")
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    assert 0 <= derive_seed(2**40, "x") < 2**63
    assert numpy_rng(3, "x").integers(0, 1000, 5).tolist() == numpy_rng(3, "x").integers(0, 1000, 5).tolist()


def test_seed_torch_gives_the_global_stream_torch_manual_seed_gives():
    import torch

    from cotrain.seeding import seed_torch

    torch.manual_seed(1234)
    expected = (torch.rand(5), torch.nn.Linear(3, 2).weight.detach().clone())
    seed_torch(1234)
    got = (torch.rand(5), torch.nn.Linear(3, 2).weight.detach().clone())
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    seed_torch(1235)
    assert not torch.equal(torch.rand(5), expected[0])
