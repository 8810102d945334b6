"""Where a valuation run computes and how its tasks run: ``[runtime]`` (`settings`), the execution seam
(`backend`: local or Ray), the Ray backend (`ray_backend`, the only module that imports ``ray``) and what
travels between machines (`shipping`). Device and dtype placement lives in `valuation.models.devices`.
Importing this package imports neither torch nor ray.
"""
