"""Region-level Shapley values: exact on a hand-built game, the Shapley axioms, KernelSHAP agreement."""
import torch
from torch import nn

from explainers.region_shapley import coalitions, region_shapley, shapley_weights
from tests.explainers.saliency_nets import SmallCNN


class RegionGame(nn.Module):
    """Logit 0 = A + B * C, where A, B, C are the mean red value over three fixed pixel blocks (regions 0-2).

    With absent regions filled black (0), v(S) = A [0 in S] + B C [1 in S][2 in S], so by hand:
    phi_0 = A, phi_1 = phi_2 = B C / 2 (symmetric players), and logit 1 = -logit 0.
    """

    def __init__(self, masks: torch.Tensor):
        super().__init__()
        self.register_buffer("masks", masks.float())

    def forward(self, x):
        red = x[:, 0]
        a, b, c = ((red[:, None] * self.masks[None]).flatten(2).sum(2) / self.masks.flatten(1).sum(1)).unbind(1)
        score = a + b * c
        return torch.stack([score, -score], dim=1)


def block_masks(h=8, w=8) -> torch.Tensor:
    """The four quadrants (top-left, top-right, bottom-left, bottom-right) as (4, h, w) bool."""
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    y, x = h // 2, w // 2
    masks[0, :y, :x] = True
    masks[1, :y, x:] = True
    masks[2, y:, :x] = True
    masks[3, y:, x:] = True
    return masks


def test_exact_values_on_a_hand_built_game():
    masks = block_masks()
    game = RegionGame(masks[:3]).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    red = x[:, 0]
    a, b, c = (red[:, :4, :4].mean((1, 2)), red[:, :4, 4:].mean((1, 2)), red[:, 4:, :4].mean((1, 2)))
    # The fourth quadrant is in no block the model reads: a null player.
    phi = region_shapley(game, x, masks[None].expand(2, -1, -1, -1), torch.tensor([0, 1]), fill=torch.zeros(3))
    expected = torch.stack([a, b * c / 2, b * c / 2, torch.zeros(2)], dim=1)
    expected[1] *= -1  # class 1 is the negated score
    torch.testing.assert_close(phi, expected, rtol=1e-5, atol=1e-6)


def test_efficiency_and_symmetry_on_a_random_cnn():
    torch.manual_seed(1)
    cnn = SmallCNN().eval()
    x = torch.rand(3, 3, 32, 32)
    masks = torch.zeros(3, 5, 32, 32, dtype=torch.bool)
    for j in range(4):
        masks[:, j, (j // 2) * 16:(j // 2 + 1) * 16, (j % 2) * 16:(j % 2 + 1) * 16] = True
    masks[:, 0, :2, :2] = False  # some pixels in no region: always present
    masks[0, 4] = False  # region 4 is absent from image 0 and a 1-pixel region elsewhere
    masks[1:, 4, 0, 0] = True
    targets = torch.tensor([0, 3, 4])
    phi = region_shapley(cnn, x, masks, targets, score="softmax")
    with torch.no_grad():
        full = cnn(x).softmax(1).gather(1, targets[:, None])[:, 0]
        colour = x.mean(dim=(2, 3))[:, :, None, None].expand_as(x)
        none = torch.where(masks.any(1)[:, None], colour, x)
        empty = cnn(none).softmax(1).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(phi.sum(1), full - empty, rtol=1e-4, atol=1e-6)
    assert phi[0, 4] == 0


class TopHalfSquared(nn.Module):
    """Logit = (mean red over the top half)^2: symmetric in the two top quadrants, blind to the bottom."""

    def forward(self, x):
        return (x[:, 0, :x.shape[2] // 2].mean(dim=(1, 2)) ** 2)[:, None]


def test_symmetric_players_get_equal_values():
    tile = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    tiled = tile.repeat(1, 1, 2, 2)  # the four quadrants are copies: the top two are interchangeable
    phi = region_shapley(TopHalfSquared(), tiled, block_masks(32, 32)[None], torch.tensor([0]), fill=torch.zeros(3))
    red = tile[0, 0].mean()
    torch.testing.assert_close(phi[0], torch.stack([red ** 2 / 2, red ** 2 / 2, torch.tensor(0.), torch.tensor(0.)]))


def test_kernel_shap_agrees_with_exact_enumeration():
    torch.manual_seed(2)
    cnn = SmallCNN().eval()
    x = torch.rand(2, 3, 32, 32)
    masks = block_masks(32, 32)[None].expand(2, -1, -1, -1)
    targets = torch.tensor([1, 2])
    exact = region_shapley(cnn, x, masks, targets)
    estimated = region_shapley(cnn, x, masks, targets, exact_max=0, n_samples=300, seed=0)
    scale = exact.abs().max()
    assert (estimated - exact).abs().max() < 0.05 * scale, (estimated, exact)
    # Deterministic for a seed, and the caller's random state is untouched.
    state = torch.get_rng_state()
    again = region_shapley(cnn, x, masks, targets, exact_max=0, n_samples=300, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(again, estimated, rtol=0, atol=0)


def test_weight_matrix_is_the_shapley_formula():
    # n = 2: phi_0 = (v(0) - v()) / 2 + (v(01) - v(1)) / 2, coalitions ordered by bit pattern.
    assert coalitions(2).tolist() == [[False, False], [True, False], [False, True], [True, True]]
    torch.testing.assert_close(shapley_weights(2), torch.tensor([[-0.5, 0.5, -0.5, 0.5], [-0.5, -0.5, 0.5, 0.5]],
                                                                dtype=torch.float64))
    # Every row sums to 0 (adding a constant to v changes nothing); efficiency: columns of all / none.
    w = shapley_weights(5)
    torch.testing.assert_close(w.sum(1), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(w.sum(0)[[0, -1]], torch.tensor([-1.0, 1.0], dtype=torch.float64))
