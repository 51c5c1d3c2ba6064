"""Fixtures for tests against a real S3 engine (SeaweedFS); filled in with the S3 backend."""
