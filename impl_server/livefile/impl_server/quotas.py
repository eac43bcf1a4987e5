"""Quotas: how large one resource may grow and how many resources one upload context may hold."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quotas:
    max_resource_size: int | None = None
    max_resources_per_context: int | None = None
