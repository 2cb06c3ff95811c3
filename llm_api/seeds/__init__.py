"""Routes that speak the seed systems' shapes (see DESIGN.md, "Routes").

Each is a thin adapter over the completion service: it translates a request shape and a response
shape, nothing more. Auth, limits, metering and errors are the service's.
"""
