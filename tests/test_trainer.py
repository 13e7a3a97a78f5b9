"""The training step and its machinery: the reference's step, the paper's LR schedule and Adam,
learning, torch.compile and CUDA graphs changing speed and not maths, and the precision."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from pix2pix.bench.speed import ClassicStep
from pix2pix.distributed import pick_device
from pix2pix.trainer import Pix2Pix

CPU = torch.device("cpu")


class ReferenceAdam(torch.optim.Adam):
    """torch's default (single-tensor) Adam, as the reference steps with, carrying the flag SkipGuard
    sets (which only fused Adam reads) outside its step."""

    def step(self, closure=None):
        flag = self.__dict__.pop("found_inf")
        try:
            return super().step(closure)
        finally:
            self.found_inf = flag


def one_step_each(cfg, reference_adam: bool):
    """(our step's losses and state, the reference step's losses and state) from the same weights
    and batch; with `reference_adam`, ours steps with the reference's Adam instead of fused Adam."""
    torch.manual_seed(0)
    ours, reference = Pix2Pix(cfg, CPU), ClassicStep(cfg, CPU)
    engine = ours.engine
    reference.netG.load_state_dict(engine.G.state_dict())
    reference.netD.load_state_dict(engine.D.state_dict())
    if reference_adam:
        for name, net in (("opt_g", engine.G), ("opt_d", engine.D)):
            adam = ReferenceAdam(net.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2))
            adam.found_inf = getattr(engine, name).found_inf
            setattr(engine, name, adam)
        engine.guard.optimisers = [engine.opt_d, engine.opt_g]
    batch = torch.rand(1, 6, 64, 64) * 2 - 1
    losses = ours.step(batch[:, :3], batch[:, 3:])
    recorded = []
    gan, l1 = reference.criterionGAN, reference.criterionL1
    reference.criterionGAN = lambda logits, real: recorded.append(gan(logits, real)) or recorded[-1]
    reference.criterionL1 = lambda fake, real: recorded.append(l1(fake, real)) or recorded[-1]
    reference.step(batch[:, :3], batch[:, 3:])
    d_fake, d_real, g_gan, g_l1 = recorded
    state = {**{f"G.{k}": v for k, v in engine.G.state_dict().items()}, **{f"D.{k}": v for k, v in engine.D.state_dict().items()}}
    expected = {**{f"G.{k}": v for k, v in reference.netG.state_dict().items()},
                **{f"D.{k}": v for k, v in reference.netD.state_dict().items()}}
    return (losses, state), (torch.stack([g_gan, g_l1, d_real, d_fake]).detach(), expected)


def test_a_step_is_the_reference_codes_step_but_for_fused_adams_rounding(tiny_cfg):
    """Against the reference code's step (pix2pix_model.optimize_parameters, as bench.speed.ClassicStep
    runs it), same weights, same batch: with the reference's Adam, bit for bit the same losses,
    weights and batch-norm statistics (D sees the fake pair first, as there); with the fused Adam
    training uses, the weights differ in their last bits, and so the G loss and the statistics of
    the pass after D's update."""
    cfg = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, dropout=False))
    (losses, state), (expected_losses, expected) = one_step_each(cfg, reference_adam=True)
    assert torch.equal(losses, expected_losses)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    (losses, state), (expected_losses, expected) = one_step_each(cfg, reference_adam=False)
    assert torch.equal(losses[1:], expected_losses[1:])  # G's L1 and D's losses: before any update
    torch.testing.assert_close(losses, expected_losses, rtol=1e-5, atol=0)
    different = [k for k in state if not torch.equal(state[k], expected[k])]
    assert different and all(torch.allclose(state[k].float(), expected[k].float(), rtol=0, atol=1e-6) for k in state)


def epoch_lrs(cfg) -> list[float]:
    """The LR each epoch of a run trains with, read from the model's own schedule."""
    engine = Pix2Pix(cfg, pick_device("cpu")).engine
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(engine.lr)
        engine.end_epoch()
    return lrs


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no steps: the schedule alone
def test_the_paper_recipe_trains_100_epochs_at_2e_4_then_decays_over_100(tiny_cfg):
    """Pinned per epoch (1-based): 1-100 at 2e-4, epoch 100 + k at 2e-4 * (1 - k/101). The reference
    code is one epoch ahead (its epoch 100 + k trains at 2e-4 * (1 - (k+1)/101)): see linear_decay."""
    cfg = dataclasses.replace(tiny_cfg, epochs=200, optim=dataclasses.replace(tiny_cfg.optim, decay_share=0.5))
    lrs = epoch_lrs(cfg)
    assert lrs[:100] == [2e-4] * 100
    assert lrs[100:] == pytest.approx([2e-4 * (1 - k / 101) for k in range(1, 101)], rel=1e-12)


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 10])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no steps: the schedule alone
def test_any_epoch_count_is_valid_and_keeps_the_shape_without_a_second_override(epochs):
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
    engine = Pix2Pix(tiny_cfg, CPU).engine
    for opt in (engine.opt_g, engine.opt_d):
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.Adam)
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)


def test_training_steps_reduce_l1_on_a_fixed_batch(tiny_cfg):
    model = Pix2Pix(tiny_cfg, CPU)
    a = F.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="bilinear")
    b = -a  # a smooth, learnable mapping
    first = model.step(a, b)[1].item()
    for _ in range(40):
        last = model.step(a, b)[1].item()
    assert last < 0.85 * first


@pytest.mark.parametrize("gan_mode", ["vanilla", "lsgan"])
def test_the_gan_mode_reaches_the_step(tiny_cfg, gan_mode):
    """D's losses in a step are optim.gan_mode's loss of D's logits (BCE, or squared error to 1 and 0)."""
    import copy

    cfg = dataclasses.replace(tiny_cfg, optim=dataclasses.replace(tiny_cfg.optim, gan_mode=gan_mode),
                              model=dataclasses.replace(tiny_cfg.model, dropout=False))
    model = Pix2Pix(cfg, CPU)
    G, D = copy.deepcopy(model.engine.G), copy.deepcopy(model.engine.D)  # the weights the step starts from
    a, b = (torch.rand(2, 6, 64, 64) * 2 - 1).split(3, dim=1)
    _, _, d_real, d_fake = model.step(a, b)
    with torch.no_grad():
        fake_logits, real_logits = D(torch.cat([a, G(a)], 1)), D(torch.cat([a, b], 1))
    loss = F.binary_cross_entropy_with_logits if gan_mode == "vanilla" else F.mse_loss
    assert d_real == loss(real_logits, torch.ones_like(real_logits))
    assert d_fake == loss(fake_logits, torch.zeros_like(fake_logits))


def test_compiled_training_step_matches_eager(tiny_cfg):
    """train.compile changes speed, not maths: over three steps the same losses, the same gradient
    of every weight of G and D at each step, and the same weights and batch-norm statistics after.

    Weights are held to Adam's bound rather than to the gradients' tolerance: Adam's first updates
    are about lr per weight whatever the gradient's size, so a gradient within rounding of 0 that
    rounds to the other sign moves its weight by up to 2 lr per step (a rare weight does)."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        # dropout off: compiled code draws its random masks from another generator
        cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, compile=compiled),
                                  model=dataclasses.replace(tiny_cfg.model, dropout=False))
        model = Pix2Pix(cfg, CPU)
        nets = (("G", model.engine.G), ("D", model.engine.D))
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
        model.engine.end_epoch()  # lr halves (decay over 1 of 2 epochs)
        losses += [model.step(x[:2, :3], x[:2, 3:]), model.step(x[4:, :3], x[4:, 3:])]
        assert (model.engine.graphed is not None) == graphs and model.engine.steps == 4
        results.append((torch.stack(losses), [p.detach().clone() for p in model.engine.G.parameters()]))
    (eager_losses, eager_w), (graph_losses, graph_w) = results
    torch.testing.assert_close(graph_losses, eager_losses, rtol=2e-2, atol=2e-3)
    for g, e in zip(graph_w, eager_w):
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-4)


def autocast_dtype(model: Pix2Pix) -> torch.dtype:
    """The dtype G's first convolution computes in under the model's training autocast."""
    engine = model.engine
    with engine.autocast:
        return engine.G.model.model[0](torch.zeros(1, 3, 64, 64, device=engine.device)).dtype


def test_train_precision_is_bf16_autocast_on_cuda_and_always_fp32_on_cpu(tiny_cfg):
    from pix2pix.config import training_precision

    fp32 = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, precision="fp32"))
    assert tiny_cfg.train.precision == "bf16"  # params.yaml's default
    assert (training_precision(tiny_cfg, "cuda"), training_precision(fp32, "cuda")) == ("bf16", "fp32")
    assert training_precision(tiny_cfg, "cpu") == "fp32"
    assert autocast_dtype(Pix2Pix(tiny_cfg, CPU)) == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast applies on a CUDA device")
def test_train_precision_sets_the_cuda_autocast(tiny_cfg):
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        cfg = dataclasses.replace(tiny_cfg, device="cuda", train=dataclasses.replace(tiny_cfg.train, precision=precision))
        assert autocast_dtype(Pix2Pix(cfg, torch.device("cuda"))) == dtype
