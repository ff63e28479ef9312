"""Helpers shared by the test suites (real services, fakes). Importable from any conftest."""
