"""Helpers shared by every test package: waiting for signals instead of sleeping."""
