"""The file name of a device profile (``results/profiles/<name>``): who writes it
(:mod:`hierbench.profiling`) and who looks it up (runtime tables, validation, report) agree here."""

from __future__ import annotations

__all__ = ["profile_filename"]


def profile_filename(
    model: str,
    stem: str,
    dataset: str,
    device: str,
    threads: int | None,
    precision: str = "fp32",
) -> str:
    """The committed name of a profile: ``resnet18-imagenet-cifar10-cpu-t1.csv``.

    A profile measured in another numeric setting than fp32 (``RunConfig.precision``) carries it
    last: ``resnet18-cifar-cifar10-cpu-t2-bf16-cl.csv``.

    VGG-16 has no stem (both stems build the same network), so its profiles are named without
    one: ``vgg16-cifar10-cpu-t2.csv``. CUDA profiles: ``...-cuda.csv``.
    """
    parts = [model] + ([] if model == "vgg16" else [stem]) + [dataset]
    parts.append(f"cpu-t{threads}" if device == "cpu" else device)
    if precision != "fp32":
        parts.append(precision)
    return "-".join(parts) + ".csv"
