import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from pix2pix.distributed import pick_device
from pix2pix.losses import GANLoss, discriminator_loss, generator_loss
from pix2pix.trainer import Pix2Pix


def test_vanilla_gan_loss_is_bce_on_logits():
    gan = GANLoss("vanilla")
    zeros = torch.zeros(1, 1, 4, 4)
    assert gan(zeros, True).item() == pytest.approx(math.log(2))
    assert gan(torch.full((2, 1, 3, 3), 20.0), True).item() < 1e-6
    assert gan(torch.full((2, 1, 3, 3), 20.0), False).item() == pytest.approx(20.0, rel=1e-4)


def test_lsgan_is_squared_error_to_targets():
    gan = GANLoss("lsgan")
    assert gan(torch.full((1, 1, 2, 2), 0.5), True).item() == pytest.approx(0.25)
    assert gan(torch.full((1, 1, 2, 2), 0.5), False).item() == pytest.approx(0.25)


def test_discriminator_loss_is_halved_sum():
    gan = GANLoss("vanilla")
    real, fake = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    total, lr, lf = discriminator_loss(gan, real, fake)
    assert total.item() == pytest.approx(0.5 * (gan(real, True) + gan(fake, False)).item())
    assert lr.item() == pytest.approx(gan(real, True).item())


def test_generator_loss_is_gan_plus_lambda_l1():
    gan = GANLoss("vanilla")
    logits, fake, target = torch.randn(1, 1, 4, 4), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    total, g_gan, g_l1 = generator_loss(gan, logits, fake, target, lambda_l1=100.0)
    assert g_l1.item() == pytest.approx((fake - target).abs().mean().item())
    assert total.item() == pytest.approx(g_gan.item() + 100.0 * g_l1.item(), rel=1e-6)


def epoch_lrs(cfg) -> list[float]:
    """The LR each epoch of a run trains with, read from the model's own schedule."""
    model = Pix2Pix(cfg, pick_device("cpu"))
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(model.lr)
        model.end_epoch()
    return lrs


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no steps: the schedule alone
def test_the_paper_recipe_trains_100_epochs_at_2e_4_then_decays_over_100(tiny_cfg):
    """Pinned per epoch (1-based): 1-100 at 2e-4, epoch 100 + k at 2e-4 * (1 - k/101). The reference
    code is one epoch ahead (its epoch 100 + k trains at 2e-4 * (1 - (k+1)/101)): see linear_decay."""
    cfg = dataclasses.replace(tiny_cfg, epochs=200, optim=dataclasses.replace(tiny_cfg.optim, decay_share=0.5))
    lrs = epoch_lrs(cfg)
    assert lrs[:100] == [2e-4] * 100
    assert lrs[100:] == pytest.approx([2e-4 * (1 - k / 101) for k in range(1, 101)], rel=1e-12)
    assert lrs[-1] == pytest.approx(2e-4 / 101)


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 10])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no steps: the schedule alone
def test_any_epoch_count_is_valid_and_keeps_the_shape_without_a_second_override(epochs, tmp_path):
    """`-S epochs=N` alone: constant, then linear decay over the last half (rounded down)."""
    import yaml

    from conftest import ROOT
    from pix2pix.config import decay_epochs, load_config

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = load_config(ROOT / "params.yaml", {"epochs": epochs, "model.ngf": 8, "model.ndf": 8, "image_size": 32})
    assert params["optim"]["decay_share"] == 0.5 and decay_epochs(cfg) == epochs // 2
    lrs = epoch_lrs(cfg)
    constant = epochs - epochs // 2
    assert lrs[:constant] == [2e-4] * constant
    assert all(a > b > 0 for a, b in zip(lrs[constant - 1:], lrs[constant:]))


def test_optimisers_are_the_papers(tiny_cfg):
    model = Pix2Pix(tiny_cfg, pick_device("cpu"))
    for opt in (model.opt_g, model.opt_d):
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.Adam)
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)


def test_training_steps_reduce_l1_on_a_fixed_batch(tiny_cfg):
    model = Pix2Pix(tiny_cfg, pick_device("cpu"))
    a = F.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="bilinear")
    b = -a  # a smooth, learnable mapping
    first = model.step(a, b)[1].item()
    for _ in range(40):
        last = model.step(a, b)[1].item()
    assert last < 0.85 * first


def test_lr_schedule_advances_per_epoch(tiny_cfg):
    model = Pix2Pix(tiny_cfg, pick_device("cpu"))  # epochs 2, decay 1
    assert model.lr == pytest.approx(2e-4)
    model.step(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    model.end_epoch()
    assert model.lr == pytest.approx(1e-4)


def test_compiled_training_step_matches_eager(tiny_cfg):
    """train.compile changes speed, not maths: over three steps the same losses, the same gradient
    of every weight of G and D at each step, and the same weights and batch-norm statistics after.

    Weights are held to Adam's bound rather than to the gradients' tolerance: Adam's first updates
    are about lr per weight whatever the gradient's size, so a gradient within rounding of 0 that
    rounds to the other sign moves its weight by up to 2 lr per step (seen on 1 of 0.5 M weights)."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        # dropout off: compiled code draws its random masks from another generator
        cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, compile=compiled),
                                  model=dataclasses.replace(tiny_cfg.model, dropout=False))
        model = Pix2Pix(cfg, torch.device("cpu"))
        nets = (("G", model.G), ("D", model.D))
        losses, grads = [], []
        for b in torch.rand(3, 2, 6, 64, 64) * 2 - 1:
            losses.append(model.step(b[:, :3], b[:, 3:]))
            grads.append({f"{n}.{k}": p.grad.clone() for n, net in nets for k, p in net.named_parameters()})
        state = {f"{n}.{k}": v.detach().clone() for n, net in nets for k, v in net.state_dict().items()}
        results.append((torch.stack(losses), grads, state))
    (eager_loss, eager_grads, eager), (comp_loss, comp_grads, comp) = results
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-3, atol=1e-4)
    for step, (e, c) in enumerate(zip(eager_grads, comp_grads)):
        assert c.keys() == e.keys() and len(e) > 40
        for k in e:  # relative to the tensor's scale: D's and G's gradients differ by orders of magnitude
            torch.testing.assert_close(c[k], e[k], rtol=1e-3, atol=1e-3 * e[k].abs().max().item(),
                                       msg=lambda m, k=k, step=step: f"step {step + 1}, grad of {k}: {m}")
    assert comp.keys() == eager.keys() and len(eager) > 50
    adam_bound = 2 * tiny_cfg.optim.lr * len(eager_grads)
    for k in eager:  # the weights, and the batch norms' running statistics
        torch.testing.assert_close(comp[k], eager[k], rtol=1e-3, atol=adam_bound if k in eager_grads[0] else 1e-4,
                                   msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_steps_match_eager_steps(tiny_cfg):
    """The captured step trains like the eager one: warm-up steps leave no trace, the LR schedule
    reaches the graph, and a short last batch falls back to eager."""

    results = []
    for graphs in (False, True):
        torch.manual_seed(0)
        cfg = dataclasses.replace(tiny_cfg, device="cuda", model=dataclasses.replace(tiny_cfg.model, dropout=False),
                                  train=dataclasses.replace(tiny_cfg.train, cuda_graphs=graphs))
        model = Pix2Pix(cfg, torch.device("cuda"))
        x = torch.rand(5, 6, 64, 64, device="cuda") * 2 - 1
        losses = [model.step(x[i:i + 2, :3], x[i:i + 2, 3:]) for i in (0, 2)]
        model.end_epoch()  # lr halves (decay over 1 of 2 epochs)
        losses += [model.step(x[:2, :3], x[:2, 3:]), model.step(x[4:, :3], x[4:, 3:])]
        assert (model.graphed is not None) == graphs and model.steps == 4
        results.append((torch.stack(losses), [p.detach().clone() for p in model.G.parameters()]))
    (eager_losses, eager_w), (graph_losses, graph_w) = results
    torch.testing.assert_close(graph_losses, eager_losses, rtol=2e-2, atol=2e-3)
    for g, e in zip(graph_w, eager_w):
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-4)


def autocast_dtype(model: Pix2Pix) -> torch.dtype:
    """The dtype G's first convolution computes in under the model's training autocast."""
    with model.autocast:
        return model.G.model.model[0](torch.zeros(1, 3, 64, 64, device=model.device)).dtype


def test_train_precision_is_bf16_autocast_on_cuda_and_always_fp32_on_cpu(tiny_cfg):
    from pix2pix.config import training_precision

    fp32 = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, precision="fp32"))
    assert tiny_cfg.train.precision == "bf16"  # params.yaml's default
    assert (training_precision(tiny_cfg, "cuda"), training_precision(fp32, "cuda")) == ("bf16", "fp32")
    assert training_precision(tiny_cfg, "cpu") == "fp32"
    assert autocast_dtype(Pix2Pix(tiny_cfg, pick_device("cpu"))) == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast applies on a CUDA device")
def test_train_precision_sets_the_cuda_autocast(tiny_cfg):
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        cfg = dataclasses.replace(tiny_cfg, device="cuda", train=dataclasses.replace(tiny_cfg.train, precision=precision))
        assert autocast_dtype(Pix2Pix(cfg, torch.device("cuda"))) == dtype
