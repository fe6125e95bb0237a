"""The facts an exported file carries (ONNX metadata_props), so `info` and the runtime can read
them from the file alone. Plain strings both ways; no onnx or torch import here."""

from __future__ import annotations

from lbnet_deploy.descriptor import ModelDescriptor

PREFIX = "lbnet."


def to_metadata(desc: ModelDescriptor, **extra: object) -> dict[str, str]:
    """Descriptor plus export facts (input size, precision, tool version) as flat strings."""
    facts = {**desc.to_dict(), **extra}
    return {PREFIX + k: str(v) for k, v in facts.items()}


def from_metadata(props: dict[str, str]) -> dict[str, str]:
    """Our keys without the prefix; an empty dict means the file was not made by lbnet-deploy."""
    return {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}


def descriptor_from_metadata(props: dict[str, str]) -> ModelDescriptor:
    facts = from_metadata(props)
    ints = ("scale", "n_feats", "heads", "attn_dim", "params", "recursions")
    return ModelDescriptor(
        variant=facts["variant"],
        sha256=facts.get("sha256", ""),
        **{k: int(facts[k]) for k in ints},  # type: ignore[arg-type]
    )
