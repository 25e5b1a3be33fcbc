"""The runtime model and separation-point search, torch-free.

Pure functions of measured device profiles (``hierbench profile`` writes them; a test imports
this package with torch made unimportable):

- :mod:`~hierbench.runtime.codec_bytes`: codec settings and bytes on the wire (link presets and
  strings are :mod:`hierbench.spec.links`');
- :mod:`~hierbench.runtime.profiles`: the profile CSV format (:func:`load_profile`);
- :mod:`~hierbench.runtime.model`: training time of cloud-only, split learning, hierarchical;
- :mod:`~hierbench.runtime.partition`: best cut and codec, crossover rate;
- :mod:`~hierbench.runtime.table`: the ``hierbench predict`` table;
- :mod:`~hierbench.runtime.scale`: E edges and W data-parallel cloud workers (per-edge links, a
  shared ingress): throughput, bottleneck, the E at which the cloud or the ingress saturates.

Example::

    from hierbench.runtime import Scenario, load_profile, search
    edge = load_profile("results/profiles/resnet18-imagenet-cifar10-cpu-t1.csv")
    result = search(Scenario(edge, "3g"))
    result.best.cut, result.reduction_vs_cloud
"""

from __future__ import annotations

from hierbench.runtime.codec_bytes import DEFAULT_CODECS, CodecSetting, parse_codec
from hierbench.runtime.model import (
    DEFAULT_CLOUD_SPEEDUP,
    Conventions,
    Prediction,
    Scenario,
    cloud_only,
    hierarchical,
    predict,
    split_learning,
)
from hierbench.runtime.partition import Candidate, Crossover, SearchResult, crossover_rate, search
from hierbench.runtime.profiles import BlockProfile, Profile, load_profile, write_profile
from hierbench.spec.links import PRESETS, LinkSpec, parse_link

__all__ = [
    "DEFAULT_CLOUD_SPEEDUP",
    "DEFAULT_CODECS",
    "PRESETS",
    "BlockProfile",
    "Candidate",
    "CodecSetting",
    "Conventions",
    "Crossover",
    "LinkSpec",
    "Prediction",
    "Profile",
    "Scenario",
    "SearchResult",
    "cloud_only",
    "crossover_rate",
    "hierarchical",
    "load_profile",
    "parse_codec",
    "parse_link",
    "predict",
    "search",
    "split_learning",
    "write_profile",
]
