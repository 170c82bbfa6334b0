"""The model organism's synthetic world: ground truth for all five case studies."""

from llmbio.world.world import World, build_world

__all__ = ["World", "build_world"]
