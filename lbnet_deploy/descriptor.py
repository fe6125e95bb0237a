"""What a model file is: variant, scale and sizes, read once and carried by every later stage.

Torch-free on purpose: the runtime reads the same facts back from ONNX metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# variant -> (n_feats F, heads h, attention width A as a function of D = 9F); LBNET.md's table
VARIANTS: dict[str, tuple[int, int, str]] = {
    "LBNet": (32, 8, "D/2"),
    "LBNet-T": (18, 6, "D"),
}
RECURSIONS = 3  # TransBlock applications per stage in the released model (the paper's TM-2)


@dataclass(frozen=True)
class ModelDescriptor:
    """Facts about one LBNet model; `sha256` names the checkpoint it came from."""

    variant: str
    scale: int
    n_feats: int
    heads: int
    attn_dim: int
    params: int = 0
    sha256: str = ""
    recursions: int = RECURSIONS

    @property
    def token_dim(self) -> int:
        return 9 * self.n_feats

    @property
    def name(self) -> str:
        """The registry name, e.g. `lbnet-t-x4`."""
        return f"{self.variant.lower()}-x{self.scale}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def describe(variant: str, scale: int, **facts: object) -> ModelDescriptor:
    """The descriptor of a variant at a scale, sizes filled in from the variant table."""
    f, heads, width = VARIANTS[variant]
    attn_dim = 9 * f // 2 if width == "D/2" else 9 * f
    return ModelDescriptor(variant, scale, f, heads, attn_dim, **facts)  # type: ignore[arg-type]
