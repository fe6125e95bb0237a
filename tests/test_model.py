"""The PyTorch reference: strict loading, parameter counts, and our rewrites against the
straightforward port (nn.Unfold/nn.Fold and a loop over attention runs)."""

from __future__ import annotations

import itertools

import pytest
import torch

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import FORMS
from lbnet_deploy.model.checkpoint import load_checkpoint, load_model

from .conftest import CHECKPOINTS, RANDOM, RANDOM_TOL, needs_weights, random_lbnet, real_checkpoint

# LBNET.md's table
PARAMS = {
    "LBNet-X2.pt": 731_264,
    "LBNet-X3.pt": 735_599,
    "LBNet-T_X2.pt": 404_633,
    "LBNet-T_X3.pt": 407_078,
    "LBNet-T_X4.pt": 410_501,
}


class Pickled:
    """Any class instance: loading it would need arbitrary unpickling."""


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_checkpoint_describes_itself(ckpt: str) -> None:
    model, desc = load_checkpoint(real_checkpoint(ckpt))
    assert (desc.variant, desc.scale) == CHECKPOINTS[ckpt]
    assert desc.params == PARAMS[ckpt] == sum(p.numel() for p in model.parameters())
    assert len(desc.sha256) == 64
    state = torch.load(real_checkpoint(ckpt), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state)  # strict: key for key


@pytest.mark.parametrize("name", RANDOM)
def test_random_checkpoint_round_trip(name: str, checkpoint) -> None:
    """A state dict alone says what it is: variant and scale inferred from keys and shapes."""
    model, desc = load_checkpoint(checkpoint(name))
    assert (desc.variant, desc.scale) == RANDOM[name]
    same = {"LBNet": 731_264, "LBNet-T": 404_633}[desc.variant]  # x2; the tail grows with s
    assert desc.params == sum(p.numel() for p in model.parameters()) >= same
    saved = torch.load(checkpoint(name), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(saved)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    # ...and the file is the seeded model, whatever the thread count of the worker that wrote it
    made = random_lbnet(*RANDOM[name]).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in made.items())


@pytest.mark.parametrize("name", ["random-LBNet-x2", "random-LBNet-T-x4"])
def test_the_random_weight_tolerance_catches_a_one_percent_attention_error(
    name: str, checkpoint
) -> None:
    """RANDOM_TOL is tight enough for random weights, whose attention moves the output little:
    a 1% error in the attention core must exceed it with margin."""
    model, _ = load_checkpoint(checkpoint(name))
    x = torch.rand(2, 3, 21, 17, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ref = model.set_ops("reference")(x)
        for stage in (model.attention, model.attention2):
            hook = stage.atten.register_forward_hook(lambda module, args, out: out * 1.01)
            wrong = model.set_ops("static")(x)
            hook.remove()
            assert (wrong - ref).abs().max().item() > 2 * RANDOM_TOL


# 16x16 has H*W % 16 == 0; 21x17 leaves a short run; 3x5 and 1x1 have H*W < 16
SIZES = [(16, 16), (21, 17), (3, 5), (1, 1), (40, 1)]
CASES = [("random-LBNet-x2", hw) for hw in SIZES] + [("random-LBNet-T-x4", hw) for hw in SIZES]
CASES += [
    (name, (21, 17)) for name in RANDOM if name not in ("random-LBNet-x2", "random-LBNet-T-x4")
]


@pytest.mark.parametrize(("name", "hw"), CASES)
def test_rewrites_equal_straightforward_port(name: str, hw: tuple[int, int], checkpoint) -> None:
    """Every graph form (static: fixed export, dynamic: dynamic export; each attention layout
    of `metadata.FORMS`) against the reference ops, for both variants at every scale."""
    model, desc = load_checkpoint(checkpoint(name))
    s = desc.scale
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ref = model.set_ops("reference")(x)
        for mode, form in itertools.product(("static", "dynamic"), FORMS):
            out = model.set_ops(mode, form)(x)
            assert out.shape == (2, 3, s * hw[0], s * hw[1])
            assert (out - ref).abs().max().item() <= RANDOM_TOL, (mode, form)


@needs_weights
def test_named_model_resolves_to_shared_weights() -> None:
    _, desc = load_model("lbnet-t-x3")
    assert (desc.variant, desc.scale) == ("LBNet-T", 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"scale": 2}, "but scale 2"), ({"variant": "LBNet"}, "but variant LBNet")],
)
def test_contradicting_options_are_refused(kwargs: dict, message: str, checkpoint) -> None:
    with pytest.raises(LBNetError, match=message):
        load_checkpoint(checkpoint("random-LBNet-T-x4"), **kwargs)


def test_bad_files_get_one_line_errors(tmp_path, checkpoint) -> None:
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(checkpoint("random-LBNet-x3").read_bytes()[:5000])
    pickled = tmp_path / "pickled.pt"
    torch.save({"head.weight": torch.zeros(1), "extra": Pickled()}, pickled)
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    cases = {
        tmp_path / "missing.pt": "not found",
        truncated: "truncated or not a PyTorch checkpoint",
        pickled: "refused",
        other: "not an LBNet checkpoint",
    }
    for path, message in cases.items():
        with pytest.raises(LBNetError, match=message) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)


def test_tampered_state_dict_is_refused(tmp_path, checkpoint) -> None:
    state = torch.load(checkpoint("random-LBNet-T-x4"), map_location="cpu", weights_only=True)
    del state["r2.b3.c5.weight"]
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    with pytest.raises(LBNetError, match="missing or unexpected keys"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("ckpt", "folded"), [("random-LBNet-T-x4", True), ("random-LBNet-x3", False)]
)
def test_reduce_folded_into_qkv_only_where_it_saves_macs(
    ckpt: str, folded: bool, checkpoint
) -> None:
    """LBNet-T (A = D): 3A*D < A*D + 3A*A, fold; LBNet (A = D/2): folding would add MACs."""
    model, _ = load_model(str(checkpoint(ckpt)))
    atten = model.attention.atten
    wq, _, _, did_fold = atten.qkv_weights()
    assert did_fold is folded
    assert wq.shape[1] == (atten.reduce.in_features if folded else atten.reduce.out_features)
    x = torch.randn(1, 10, atten.reduce.in_features)
    u = x if folded else atten.reduce(x)
    q_ref = atten.qkv(atten.reduce(x)).chunk(3, dim=-1)[0] * atten.scale
    assert torch.allclose(u @ wq.T, q_ref, atol=1e-4)


def test_using_ops_restores_the_callers_model() -> None:
    """Exporting (which traces with other ops, in eval mode) never changes the model given."""
    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.lbnet import LBNet

    model = LBNet(describe("LBNet-T", 2), ops="reference").train()
    with model.using_ops("dynamic", "flat16") as inside:
        assert (inside.ops, inside.form, inside.training) == ("dynamic", "flat16", False)
    assert (model.ops, model.form, model.training) == ("reference", "batched", True)
    with pytest.raises(ValueError, match="unknown ops"):
        model.set_ops("fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown attention form"):
        model.set_ops("static", "wide")  # type: ignore[arg-type]
