"""A bundle's policy (holdout, experiments, exploration) read from a file and written onto a
copy of a bundle (``tailor bundle policy``).

Must not import server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from model_export.bundle.card import render_report
from model_export.bundle.verify import RequirementError, load_verified
from model_export.inputs.sensitive import check_catalogue
from sdk.conditions import check_condition
from sdk.errors import ConditionError
from sdk.manifest import ExperimentDef, ExplorationDef, HoldoutDef, Manifest
from sdk.sensitive import Sensitivity

__all__ = ["PolicyConfig", "load_policy", "with_policy"]


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bundle's policy: the global holdout, the experiments and exploration (TOML or JSON;
    the keys of :class:`sdk.manifest.ExperimentDef` and friends, camelCase)."""

    experiments: list[ExperimentDef] = []
    holdout: HoldoutDef | None = None
    exploration: ExplorationDef | None = None


def load_policy(path: str | Path) -> PolicyConfig:
    """Read a policy file (``.toml`` or ``.json``).

    Raises:
        RequirementError: the file is not valid or names unknown fields (the message says
            where).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
        if file.suffix.lower() == ".toml":
            return msgspec.toml.decode(data, type=PolicyConfig)
        return msgspec.json.decode(data, type=PolicyConfig)
    except (OSError, msgspec.DecodeError) as exc:
        raise RequirementError(f"{file}: {exc}") from exc


def with_policy(
    src: str | Path,
    out: str | Path,
    policy: PolicyConfig,
    name: str,
    *,
    signing_key: str | Path | None = None,
) -> Manifest:
    """Write a copy of the bundle at ``src`` to ``out`` with ``policy`` in its manifest, signed
    with ``signing_key`` (an Ed25519 private key PEM file) when given: the manifest is new, so
    the source's signature would no longer match it.

    The models and parity rows are the source's; the manifest, the model card and the hashes
    are new, and the model version is ``{name}-{hash of the models}``, so decisions say which
    policy made them. Experiment slots, arm variants and conditions are checked against the
    catalogue before anything is written.

    Raises:
        BundleRefused: the source bundle is refused.
        RequirementError: the policy names an unknown slot or variant.
        SensitiveTargetingError: an experiment's condition targets one of the bundle's
            sensitive categories or paths.
    """
    from model_export.bundle.export import write_bundle  # onnx/sklearn only when writing

    source = load_verified(Path(src), "source")
    m = source.manifest
    variants = {s.id: {v.id for v in s.variants} for s in m.slots}
    for exp in policy.experiments:
        for slot in exp.slots:
            if slot not in variants:
                raise RequirementError(f"experiment {exp.key}: unknown slot {slot!r}")
        for arm in exp.arms:
            for slot, variant in arm.variants.items():
                if variant not in variants.get(slot, set()):
                    raise RequirementError(
                        f"experiment {exp.key}, arm {arm.key}: slot {slot!r} has no variant "
                        f"{variant!r}"
                    )
        try:
            check_condition(exp.condition, f"experiments.{exp.key}.condition")
        except ConditionError as exc:
            raise RequirementError(str(exc)) from exc
    check_catalogue(
        msgspec.structs.replace(m, experiments=policy.experiments), Sensitivity.from_manifest(m)
    )
    keep = {
        f: getattr(m, f)
        for f in m.__struct_fields__
        if f
        not in (
            "format_version",
            "model_version",
            "created_at",
            "models",
            "fused",
            "producer",
            "files",
            "experiments",
            "holdout",
            "exploration",
        )
    }
    models: dict[str, tuple[bytes, Sequence[str]]] = {
        key: ((source.path / spec.file).read_bytes(), list(spec.features))
        for key, spec in m.models.items()
    }
    return write_bundle(
        Path(out),
        models=models,
        parity=(source.path / "parity.jsonl").read_bytes(),
        manifest_fields={
            **keep,
            "experiments": policy.experiments,
            "holdout": policy.holdout,
            "exploration": policy.exploration,
        },
        name=name,
        created_at=datetime.now(UTC),
        render_report=render_report,
        signing_key=signing_key,
    )
