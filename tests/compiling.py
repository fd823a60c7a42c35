"""``DCGDPipeline.compile`` on TorchDynamo's eager back end, for tests of what calls it."""

from __future__ import annotations

import pytest

from dcgd.sampling.pipeline import DCGDPipeline


def compile_on_eager_backend(monkeypatch: pytest.MonkeyPatch) -> list[tuple[DCGDPipeline, str]]:
    """Make ``DCGDPipeline.compile`` capture the same graphs with the ``eager`` back end
    (inductor's C++ takes a minute on 2 cores); returns the (pipeline, asked back end) of
    each call, in order."""
    calls: list[tuple[DCGDPipeline, str]] = []
    compile_pipeline = DCGDPipeline.compile

    def capture_only(self: DCGDPipeline, backend: str = "inductor") -> DCGDPipeline:
        calls.append((self, backend))
        return compile_pipeline(self, "eager")

    monkeypatch.setattr(DCGDPipeline, "compile", capture_only)
    return calls
