import torch

import ebm_play


def test_bundled_sample_is_real_mnist_in_model_format():
    train, test = ebm_play.sample_digits(True), ebm_play.sample_digits(False)
    assert train.x.shape == (8000, 1, 28, 28) and test.x.shape == (2000, 1, 28, 28)
    assert train.x.min() == -1 and train.x.max() == 1
    assert torch.bincount(train.y, minlength=10).min() > 600  # every digit is there
    assert abs(((train.x + 1) / 2).mean().item() - 0.13) < 0.01  # MNIST's mean ink


def test_missing_mnist_falls_back_to_the_bundled_sample(tmp_path):
    d = ebm_play.mnist(root=tmp_path / "nowhere", train=False, classes=[1, 7], limit=50)
    assert "bundled" in d.source and len(d.x) == 50 and set(d.y.tolist()) <= {1, 7}
