"""Helpers shared by test files of more than one tier."""
