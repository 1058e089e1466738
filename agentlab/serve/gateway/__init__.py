"""The gateway: exported agents behind authentication, rate limits, cost per client,
A/B routing, feature flags and breakers (issue 11)."""
