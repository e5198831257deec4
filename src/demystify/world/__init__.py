"""The synthetic object world: procedural objects, a torch renderer, scenes, videos, writers."""
