"""The evidence's prediction-only forwards run on a BatchNorm-folded copy: same outputs, and the original
whenever folding is not possible or not exact."""
import torch
import torchvision
from torch import nn

from explainers.loading.models import channels_last, folded_for_prediction


def _resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    for m in net.modules():  # running statistics that are not the identity, or folding would be trivial
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return channels_last(net.eval())


def test_a_resnet_is_folded_into_a_copy_with_the_same_outputs():
    net = _resnet()
    x = torch.rand(6, 3, 64, 64)
    folded = folded_for_prediction(net, x[:2])
    assert folded is not net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 20  # the original is untouched
    with torch.no_grad():
        expected, got = net(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))


class _ValueDependent(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y.mean((2, 3)) if float(y.mean()) > 0 else -y.mean((2, 3))


class _Shared(nn.Module):
    """A conv whose output feeds the BatchNorm and a skip: folding it would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(1.0)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_models_that_cannot_be_folded_exactly_are_used_as_they_are():
    x = torch.rand(2, 3, 8, 8)
    untraceable = _ValueDependent().eval()
    assert folded_for_prediction(untraceable, x) is untraceable
    no_batchnorm = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval()
    assert folded_for_prediction(no_batchnorm, x) is no_batchnorm
    training = _resnet().train()  # fx's fold refuses a BatchNorm in training mode
    assert folded_for_prediction(training, torch.rand(2, 3, 32, 32)) is training
    shared = _Shared().eval()
    folded = folded_for_prediction(shared, x)  # fx leaves the shared conv unfolded: exact either way
    with torch.no_grad():
        torch.testing.assert_close(folded(x), shared(x))


def test_a_copy_that_disagrees_with_the_original_is_not_used(monkeypatch):
    import torch.fx.experimental.optimization as optimization

    net = _resnet()

    real = optimization.fuse

    def wrong_fold(model):
        copy = real(model)
        copy.fc.bias.data += 1.0
        return copy

    monkeypatch.setattr(optimization, "fuse", wrong_fold)
    assert folded_for_prediction(net, torch.rand(2, 3, 32, 32)) is net
