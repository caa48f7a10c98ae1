"""Helpers shared by every test suite (and the benchmarks): keys, loopback servers, hosts that
sign, reporters and hubs. Each idea has one module here; test files import from them."""
