"""Tests of the QC regression networks: sizes, output shapes and bounded outputs."""

from __future__ import annotations

import pytest
import torch

from monai_qc.networks import (
    QC_NETWORKS,
    QCNet,
    build_qc_network,
    count_parameters,
    qc_resnet2d,
    symmetric_views,
)

K = 5  # the paper's classes: BG, LVM, LVC, LVT, LVPM

EXPECTED_PARAMS = {
    "resnet2d": 2e6,
    "context_resnet2d": 2e6,
    "expert_map_resnet2d": 2.1e6,
    "unet2d": 19e6,
    "resnet3d": 3e6,
    "unet3d": 21e6,
}


def _check_bounds(out: torch.Tensor, with_mvsf: bool) -> None:
    assert torch.isfinite(out).all()
    dsc = out[:, :K]
    assert float(dsc.min()) >= 0.0 and float(dsc.max()) <= 1.0
    if with_mvsf:
        mvsf = out[:, K:]
        assert float(mvsf.min()) >= -2.0 and float(mvsf.max()) <= 2.0


def test_registry_names() -> None:
    assert set(QC_NETWORKS) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name: str) -> None:
    n = count_parameters(build_qc_network(name, K))
    assert 0.75 * EXPECTED_PARAMS[name] <= n <= 1.25 * EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", ["resnet2d", "expert_map_resnet2d", "unet2d"])
def test_2d_output_shape_and_bounds(name: str) -> None:
    torch.manual_seed(0)
    net = build_qc_network(name, K).eval()
    x = torch.rand(2, 1 + K, 128, 128)
    with torch.no_grad():
        out = net(x)
        extreme = net(torch.cat([x * 1e3, -x * 1e3]))
    assert out.shape == (2, 2 * K)
    _check_bounds(out, with_mvsf=True)
    assert extreme.shape == (4, 2 * K)
    _check_bounds(extreme, with_mvsf=True)


def test_resnet3d_output_shape_and_bounds() -> None:
    torch.manual_seed(0)
    net = build_qc_network("resnet3d", K).eval()
    x = torch.rand(2, 1 + K, 128, 128, 8)
    with torch.no_grad():
        out = net(torch.cat([x, x * 1e3]))
    assert out.shape == (4, K)
    _check_bounds(out, with_mvsf=False)


def test_unet3d_output_shape_and_bounds() -> None:
    torch.manual_seed(0)
    net = build_qc_network("unet3d", K).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1 + K, 128, 128, 8) * 1e3)
    assert out.shape == (1, K)
    _check_bounds(out, with_mvsf=False)


def test_deterministic_given_seed_and_in_channels() -> None:
    torch.manual_seed(7)
    a = qc_resnet2d(3)
    torch.manual_seed(7)
    b = build_qc_network("ResNet2D", 3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    x = torch.rand(1, 4, 64, 64)
    assert torch.equal(a.eval()(x), b.eval()(x))
    c = qc_resnet2d(3, in_channels=2).eval()
    assert c(torch.rand(1, 2, 64, 64)).shape == (1, 6)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet2d, resnet3d, unet2d, unet3d"):
        build_qc_network("vgg", K)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        build_qc_network("resnet2d", 1)
    net = QCNet(torch.nn.Linear(3, 3), n_classes=2, predict_mvsf=True)
    with pytest.raises(ValueError, match="backbone output"):
        net(torch.rand(1, 3))


def test_test_time_views_average_mirrored_and_turned_copies_in_eval_mode_only() -> None:
    torch.manual_seed(3)
    plain = build_qc_network("resnet2d", K).eval()
    x = torch.rand(3, 1 + K, 64, 64)
    quarter, three_quarters = torch.rot90(x, 1, (-2, -1)), torch.rot90(x, 3, (-2, -1))
    with torch.no_grad():
        copies = [plain(v) for v in (x, x.flip(-1), quarter, three_quarters)]
        for views in (2, 4):
            averaged = build_qc_network("resnet2d", K, test_time_views=views).eval()
            averaged.load_state_dict(plain.state_dict())  # same weights, nothing added
            expected = torch.stack(copies[:views]).mean(0)
            assert torch.allclose(averaged(x), expected, atol=1e-6)
            assert not torch.allclose(plain(x), expected, atol=1e-4)
    # training passes see the input as it is (batch statistics of x alone)
    assert torch.allclose(averaged.train()(x), plain.train()(x), atol=1e-6)
    eight = symmetric_views(torch.rand(1, 1, 5, 5), 8)  # the 8 symmetries of a square
    assert len({tuple(v.flatten().tolist()) for v in eight}) == 8
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        build_qc_network("resnet2d", K, test_time_views=3)
    with pytest.raises(ValueError, match="2D QC networks"):
        build_qc_network("resnet3d", K, test_time_views=2)


def test_context_resnet2d_reads_the_neighbouring_slices() -> None:
    """(B, 3(1+K), H, W) -> (B, 2K); the neighbours' channels change the output."""
    torch.manual_seed(0)
    net = build_qc_network("context_resnet2d", K).eval()
    assert net.context_slices == 1 and build_qc_network("resnet2d", K).context_slices == 0
    x = torch.rand(2, 3 * (1 + K), 96, 96)
    with torch.no_grad():
        out = net(x)
        alone = x.clone()
        alone[:, [0, 2]] = 0  # neighbour images
        changed = net(alone)
    assert out.shape == (2, 2 * K)
    _check_bounds(out, with_mvsf=True)
    assert not torch.allclose(out, changed)
    with pytest.raises(ValueError, match="context_slices must be >= 1"):
        build_qc_network("context_resnet2d", K, context_slices=0)
