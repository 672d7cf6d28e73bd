"""Helpers shared by the tests (servers, workers, kernels, data): not collected as tests."""
