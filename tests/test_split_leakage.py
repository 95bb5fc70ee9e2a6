import torch

from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.split import SplitAgent, SplitSettings, run_split, split_model
from cotrain.audit.split_leakage import ActivationRecorder, attribute_leakage, true_attribute


def _factory():
    return build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, seed=1)


def test_centre_infers_an_attribute_written_into_the_inputs(tiny_dataset):
    # The attribute brightens the top-left corner: the cut activations carry it.
    data = tiny_dataset
    data.x[:, :, :3, :3] += 3.0 * data.attributes["flag"].float().view(-1, 1, 1, 1)
    train, aux = data.subset(range(0, 120)), data.subset(range(120, 200))
    agent = SplitAgent("a", model_factory=_factory, train_data=train, seed=0, cut="conv1")
    recorder = ActivationRecorder(epoch=2)
    model = _factory()
    run_split(InProcessGrid({"a": agent}), model, SplitSettings(cut="conv1", epochs=2, batch_size=16),
              seed=0, observers=[recorder])
    observed = recorder.stacked("a")
    assert observed.shape == (120, 4, 4, 4)
    truth = true_attribute(agent, recorder, "flag")
    front, _ = split_model(model, "conv1")
    result = attribute_leakage(front["front"], aux.x, aux.attributes["flag"], observed, truth, attribute="flag")
    assert result.num_observed == 120
    assert result.accuracy > 0.9 > result.majority_baseline
    # The label too is read from the activations, not only from the labels sent beside them.
    labels = true_attribute(agent, recorder, "label")
    assert torch.equal(torch.sort(labels).values, torch.sort(train.y).values)
