"""Development tools: the local stack, the Edge API stub, demo feeds.

Never imported by the worker or the SDK.
"""
